"""A queued grid (`ops/grid.sh`, what `make grid` runs) in a temp git repo on
tiny params, two experiments at a time on an MLflow store that does not exist
yet: one run per experiment, the same numbers as `dvc exp show`, and the real
MLflow UI in headless Chromium listing them."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from e2e_util import BIN, ROOT, copy_project, env_for, free_port, set_params
from test_experiments import TINY, runs, sh

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
GRID = {"mlp-bce-s1": ("mlp", "bce", "1"), "mlp-hinge-s1": ("mlp", "hinge", "1")}


def exp_revs(project: Path, env: dict) -> dict[str, dict]:
    """Experiment name -> its row in `dvc exp show --json`."""
    shown = json.loads(subprocess.run(["dvc", "exp", "show", "--json"], cwd=project, env=env,
                                      capture_output=True, text=True, check=True).stdout)
    return {rev["name"]: rev for baseline in shown for exp in baseline.get("experiments") or []
            for rev in exp["revs"] if rev.get("name")}


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """Two queued experiments at once, from a committed project that has never run, on a
    store that does not exist yet."""
    tmp = tmp_path_factory.mktemp("grid")
    project = copy_project(tmp / "project")
    set_params(project, **TINY)
    env = env_for(tmp)
    env.update(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    sh(project, env, "git", "add", "-A")
    sh(project, env, "git", "commit", "-qm", "project")
    assert not (tmp / "mlflow.db").exists()
    env.update(ARCHS="mlp", LOSSES=" ".join(loss for _, loss, _ in GRID.values()), SEEDS="1", JOBS="2", GRID_SET="")
    out = sh(project, env, "bash", "ops/grid.sh")
    return project, env, out


def test_grid_runs_line_up_with_dvc_exp_show(grid):
    project, env, out = grid
    assert f"grid: {len(GRID)} experiments: 0 running, 0 queued, {len(GRID)} done, 0 failed" in out
    shown = exp_revs(project, env)
    found = runs(env)
    assert sorted(found) == sorted(GRID)  # one run per experiment, and nothing else, in the new store
    for name, (arch, loss, seed) in GRID.items():
        exp, run = shown[name], found[name]
        assert exp["error"] is None and run.info.status == "FINISHED"
        assert (run.data.params["train.arch"], run.data.params["train.loss"], run.data.params["train.seed"]) == \
            (arch, loss, seed)
        # The same result on both sides: dvc exp show's metrics are the run's.
        metrics = exp["data"]["metrics"]["reports/metrics.json"]["data"]
        assert {k: run.data.metrics[k] for k in metrics} == pytest.approx(metrics)


@pytest.fixture(scope="module")
def mlflow_ui(grid):
    project, env, _ = grid
    port = free_port()
    log = open(project.parent / "mlflow-ui.log", "w+")
    proc = subprocess.Popen([str(BIN / "mlflow"), "ui", "--backend-store-uri", env["MLFLOW_TRACKING_URI"],
                             "--host", "127.0.0.1", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, open(log.name).read()[-3000:]
            try:
                if requests.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "mlflow ui did not start"
            time.sleep(0.5)
        # The URL `make ui` prints.
        url = subprocess.run([sys.executable, "-m", "pipeline.tracking", "url", base], cwd=project, env=env,
                             capture_output=True, text=True, check=True).stdout.strip()
        yield url, env
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


@pytest.mark.chromium
def test_mlflow_ui_lists_the_grid_with_a_metric_column(mlflow_ui):
    sys.path.insert(0, str(ROOT / "ops"))
    import mlflow_ui as ui

    from playwright.sync_api import sync_playwright

    url, env = mlflow_ui
    assert url.endswith("?workflowType=machine_learning")
    found = runs(env)
    with sync_playwright() as p:
        browser = ui.launch(p)
        page = browser.new_page(viewport={"width": 1600, "height": 900})
        ui.open_runs(page, url, list(GRID))
        ui.add_columns(page, ["fcd"])
        headers, rows = ui.table(page)
        browser.close()
    assert "fcd" in headers and "Run Name" in headers
    for name in GRID:
        row = next(r for r in rows if name in r)
        # The run's own fcd, in the row of its name.
        numbers = [float(w) for w in row.split() if re.fullmatch(r"-?\d+\.\d+(e-?\d+)?", w)]
        assert any(x == pytest.approx(found[name].data.metrics["fcd"], rel=1e-9) for x in numbers), (name, row)
