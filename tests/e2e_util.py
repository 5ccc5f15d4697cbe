"""Helpers for end-to-end tests: a copy of the project in a temp git repo,
its environment (temp MLflow store and BentoML home), and a served process."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
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
    """`bentoml serve` in a real process on a free loopback port."""

    def __init__(self, cwd: Path, env: dict[str, str], target: str = "serving.service:Generator"):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(cwd / "serve.log", "w+")
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
