"""The README's first screen, as a newcomer follows it: a fresh clone, `make run`,
`make serve`, one request, the `/ui` page and `make ui`; timed, and pictured.

    python bench/first_run.py                    # clones HEAD into a temporary folder
    python bench/first_run.py --work /tmp/first --keep

Clones the repository's HEAD (what is committed, nothing else), runs `make run`
there with a BentoML home and MLflow store of the clone's own, and times it,
stage by stage, from the lines `dvc repro` prints. Then `make serve` on a free
port: a 64-digit grid from `/sample` (seed 0) becomes `docs/img/samples.png`,
and headless Chromium takes `/ui` as `docs/img/ui.png`; then `make ui` on a
free port, and the experiment's runs page with the gate's metric columns
becomes `docs/img/runs.png`. The page says how long each part took and what
`make run` printed at its end (the verdict, the champion), and the README's
quickstart line is rewritten from it. pip's cache and the MNIST cache are the
machine's own, as a second clone on one machine finds them.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench import results  # noqa: E402
from bench.serve_throughput import free_port  # noqa: E402
from ops import mlflow_ui  # noqa: E402

STAGE = re.compile(r"Running stage '([\w-]+)'")
# The lines at the end of `make run` that say how it went.
VERDICT = re.compile(r"^(evaluate: mode_collapse|export: )")
SERVER_WAIT = 300  # seconds for `bentoml serve` or `mlflow ui` to answer (a cold TensorFlow import)
# What a newcomer's shell would not carry into a fresh clone.
DROPPED_ENV = ("MLFLOW_TRACKING_URI", "VIRTUAL_ENV", "PYTHONPATH", "BENTOML_HOME", "DVC_ROOT",
               "MNIST_GAN_MODEL", "MNIST_GAN_REGISTERED_MODEL")


def clean_env(work: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in DROPPED_ENV}
    env["BENTOML_HOME"] = str(work / "bentoml")
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p)
    return env


def make_run(repo: Path, env: dict, log: Path, say) -> tuple[float, list[tuple[str, float]], list[str]]:
    """`make run` in `repo`: its wall time, (part, seconds) for the install and each
    stage, and the lines that say how it ended. Raises on a failed run."""
    parts: list[tuple[str, float]] = []
    ending: list[str] = []
    current, since = "install", time.monotonic()
    start = since
    with open(log, "w") as out:
        proc = subprocess.Popen(["make", "run"], cwd=repo, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)
        for line in proc.stdout:
            out.write(line)
            now = time.monotonic()
            found = STAGE.search(line)
            if found:
                parts.append((current, now - since))
                say(f"  {current}: {now - since:.0f} s")
                current, since = f"stage {found.group(1)}", now
            if VERDICT.match(line):
                ending.append(line.rstrip())
        code = proc.wait()
    end = time.monotonic()
    parts.append((current + " (and dvc metrics show)", end - since))
    say(f"  {parts[-1][0]}: {parts[-1][1]:.0f} s")
    if code:
        raise SystemExit(f"make run failed ({code}); its output: {log}")
    return end - start, parts, ending


@contextlib.contextmanager
def started(cmd: list[str], repo: Path, env: dict, url: str, log: Path) -> Iterator[None]:
    """A server started in its own process group, up when `url` answers; stopped after."""
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=repo, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + SERVER_WAIT
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"{' '.join(cmd)} exited ({proc.returncode}); its output: {log}")
            try:
                with urllib.request.urlopen(url, timeout=5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"{url} did not answer in {SERVER_WAIT} s; see {log}") from None
                time.sleep(1)
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def post(url: str, body: dict) -> bytes:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.read()


def serve_pictures(repo: Path, env: dict, work: Path, images: Path) -> str:
    """`make serve`, a grid from /sample and /ui in Chromium; returns what it serves."""
    from PIL import Image

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with started(["make", "serve", f"PORT={port}"], repo, env, f"{base}/readyz", work / "serve.log"):
        grid = work / "grid.png"
        grid.write_bytes(post(f"{base}/sample", {"n": 64, "seed": 0}))
        img = Image.open(grid)
        img.resize((img.width * 2, img.height * 2), Image.NEAREST).save(images / "samples.png")
        subprocess.run([chromium(), "--headless", *mlflow_ui.CHROMIUM_ARGS, "--hide-scrollbars", "--window-size=1280,900",
                        f"--screenshot={images / 'ui.png'}", "--virtual-time-budget=5000", f"{base}/ui"],
                       check=True, capture_output=True, timeout=120)
        with urllib.request.urlopen(f"{base}/info", timeout=30) as r:
            selected = json.load(r).get("selected", {})
    return f"{selected.get('by', '?')} v{selected.get('version', '?')}: {selected.get('reason', '')}"


def chromium() -> str:
    path = mlflow_ui.chromium()
    if path is None:
        raise SystemExit("the pictures need Debian's chromium (make system-deps)")
    return path


def runs_picture(repo: Path, env: dict, work: Path, images: Path) -> None:
    """`make ui`, then the runs page with the gate's columns, as ops/mlflow_ui.py drives it."""
    from playwright.sync_api import sync_playwright

    run = json.loads((repo / "reports/mlflow_run.json").read_text())["name"]
    port = free_port()
    with started(["make", "ui", f"UI_PORT={port}"], repo, env, f"http://127.0.0.1:{port}/health", work / "ui.log"):
        url = subprocess.run([str(repo / ".venv/bin/python"), "-m", "pipeline.tracking", "url",
                              f"http://127.0.0.1:{port}"], cwd=repo, env={**env, "MLFLOW_TRACKING_URI":
                             f"sqlite:///{repo / 'mlflow.db'}"}, capture_output=True, text=True, check=True).stdout.strip()
        with sync_playwright() as p:
            browser = mlflow_ui.launch(p)
            page = browser.new_page(viewport={"width": 1600, "height": 700})
            mlflow_ui.open_runs(page, url, [run])
            mlflow_ui.add_columns(page, ["fcd", "classifier_score_ratio", "quality_gate_passed"])
            page.screenshot(path=str(images / "runs.png"))
            browser.close()


def minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {seconds % 60:.0f} s"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, help="work folder (default: a temporary one, removed after)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--images", type=Path, default=ROOT / "docs/img", help="where the pictures go")
    results.add_arguments(ap)
    args = ap.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="first-run-"))
    work.mkdir(parents=True, exist_ok=True)
    args.images.mkdir(parents=True, exist_ok=True)
    say = results.Printout()
    repo = work / "repo"
    try:
        subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
        env = clean_env(work)
        say(f"make run in a fresh clone of {results.commit(ROOT).split()[0]}:")
        wall, parts, ending = make_run(repo, env, work / "make_run.log", say)
        served = serve_pictures(repo, env, work, args.images)
        runs_picture(repo, env, work, args.images)
    finally:
        if not args.keep and args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    date = time.strftime("%Y-%m-%d", time.gmtime())
    say.keep("")
    say.keep("| part | seconds |")
    say.keep("|---|---:|")
    for name, s in parts:
        say.keep(f"| {name} | {s:.0f} |")
    say.keep(f"| **make run** | **{wall:.0f}** |")
    say.keep("")
    say(f"make run: {minutes(wall)}; it ended with:")
    for line in ending:
        say(f"  {line}")
    say(f"make serve: {served}")
    print(f"pictures: {args.images}/samples.png, ui.png, runs.png")
    if args.results is None:
        return
    rel = os.path.relpath(args.images, args.results)
    body = (say.markdown()
            + f"\n![64 digits from /sample, seed 0, {date}]({rel}/samples.png)\n\n"
            + f"![The service's /ui page, {date}]({rel}/ui.png)\n\n"
            + f"![make ui: the run in MLflow, {date}]({rel}/runs.png)\n")
    results.publish("first_run", "make run on a fresh clone", body, argv=argv, out=args.results)
    if args.results == results.RESULTS:
        results.readme_block("first_run", f"`make run` took {minutes(wall)} on a fresh clone "
                             f"({results.machine().cpu}, [results](docs/results/first_run.md)) and ended with:\n\n"
                             "```text\n" + "\n".join(ending) + "\n```")


if __name__ == "__main__":
    main()
