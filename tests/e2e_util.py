"""Helpers for end-to-end tests: a copy of the project in a temp git repo,
its environment (temp MLflow store and BentoML home), and a served process."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def copy_project(dest: Path) -> Path:
    """The project's tracked and unignored files, in a fresh git repo."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout.split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    return dest


def set_params(project: Path, **sections) -> None:
    path = project / "params.yaml"
    doc = yaml.safe_load(path.read_text())
    for section, values in sections.items():
        doc[section].update(values)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def env_for(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        MLFLOW_TRACKING_URI=f"sqlite:///{tmp / 'mlflow.db'}",
        BENTOML_HOME=str(tmp / "bentoml"),
        TF_CPP_MIN_LOG_LEVEL="2",
        PYTHONPATH=str(tmp / "project"),
    )
    env.pop("DVC_EXP_NAME", None)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """`bentoml serve` in a real process on a free loopback port; as a context manager,
    ready on entry and stopped on exit."""

    def __init__(self, cwd: Path, env: dict[str, str], target: str = "serving.service:Generator"):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.TemporaryFile("w+")  # not in cwd: a project's git status stays clean
        self.proc = subprocess.Popen(
            [str(BIN / "bentoml"), "serve", target, "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=cwd, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bentoml serve exited: {self.output()}")
            try:
                if requests.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except requests.RequestException:  # not listening yet, or busy starting
                pass
            time.sleep(0.5)
        raise TimeoutError(f"bentoml serve not ready after {timeout}s: {self.output()}")

    def __enter__(self) -> "Served":
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
        self.log.close()


_STORE_SCRIPT = """
import json, sys, tempfile
from pathlib import Path
from pipeline.export import export_saved_model, model_card
from serving import contract
from pipeline.models import build_generator
from pipeline import params

arch, z_dim, channels, extra = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
gen = build_generator(params.load("train", changes={"arch": arch, "z_dim": z_dim, "virtual_labels": 0}), channels)
tmp = Path(tempfile.mkdtemp())
export_saved_model(gen, tmp / "generator")
card = model_card(gen, {"run_id": "test-run"}, {"diversity_ratio": 0.9}, {"data_sha256": "0" * 64},
                  {"train.arch": arch, "train.loss": "bce"})
for key, value in extra.items():
    if value is None:
        card.pop(key, None)
    else:
        card[key] = value
print(contract.store(tmp / "generator", card))
"""


def store_generator(env: dict[str, str], arch: str = "mlp", z_dim: int = 100, channels: int = 1, **card) -> str:
    """An untrained generator exported and saved to the BentoML store that
    `env` names (BENTOML_HOME), in a subprocess so this process's bentoml
    keeps its own home. `card` overrides model-card keys (None removes one).
    Returns the tag."""
    import json

    env = dict(env, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", _STORE_SCRIPT, arch, str(z_dim), str(channels), json.dumps(card)],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return proc.stdout.strip().splitlines()[-1]


def serving_env(tmp: Path) -> dict[str, str]:
    """Environment for `bentoml serve` of this checkout's service against a
    temp BentoML home."""
    env = dict(os.environ)
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", BENTOML_HOME=str(tmp / "bentoml"),
               TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT), BENTOML_DO_NOT_TRACK="true")
    return env
