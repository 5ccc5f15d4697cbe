"""The experiment loop on tiny params, with real DVC and MLflow in a temp git
repo: `dvc repro` and the commit of its results, `dvc exp run` of an
evaluate-only, a judge-only and a repeated experiment (DVC's run cache), a
queued grid (`ops/grid.sh`, what `make grid` runs) on a brand-new store, the
real MLflow UI in headless Chromium, and what reaches git."""
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

pytestmark = pytest.mark.e2e
STEPS = 6
TINY = dict(prepare={"limit": 300},
            train={"steps": STEPS, "batch_size": 32, "sample_every": 3, "log_every": 4, "z_dim": 24,
                   "virtual_labels": 8,
                   "checkpoint_every": 3, "jit_compile": False},
            judge={"epochs": 1, "width": 4, "feature_dim": 16},
            evaluate={"num_samples": 64})
MB = 1 << 20
GRID = {"mlp-bce-s1": ("mlp", "bce", "1"), "mlp-hinge-s1": ("mlp", "hinge", "1"), "mlp-wgan-s1": ("mlp", "wgan", "1")}


def sh(project: Path, env: dict, *cmd: str) -> str:
    proc = subprocess.run(list(cmd), cwd=project, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{cmd}: {proc.stdout[-3000:]}{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


def at_baseline(project: Path, env: dict) -> None:
    """Back to the committed results: `dvc exp run` leaves its experiment in the workspace."""
    sh(project, env, "git", "reset", "-q", "--hard")
    sh(project, env, "dvc", "checkout", "--force")


def client(env: dict):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])


def runs(env: dict) -> dict[str, object]:
    """The experiment's runs by name (names are unique here)."""
    c = client(env)
    exp = c.get_experiment_by_name("mnist-gan")
    found = c.search_runs([exp.experiment_id], max_results=1000) if exp else []
    names = [r.info.run_name for r in found]
    assert len(names) == len(set(names)), names
    return {r.info.run_name: r for r in found}


def snapshot(env: dict, run_id: str):
    r = client(env).get_run(run_id)
    return r.info.status, r.info.end_time, dict(r.data.params), dict(r.data.metrics), dict(r.data.tags)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """`dvc repro` on tiny params, then the results committed as the README says."""
    tmp = tmp_path_factory.mktemp("exp")
    project = copy_project(tmp / "project")
    set_params(project, **TINY)
    env = env_for(tmp)
    env.update(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    for cmd in (["git", "add", "-A"], ["git", "commit", "-qm", "project"], ["dvc", "repro"],
                ["git", "add", "-A"], ["git", "commit", "-qm", "dvc repro"]):
        sh(project, env, *cmd)
    return project, env


@pytest.fixture(scope="module")
def baseline(repo):
    project, env = repo
    return json.loads((project / "reports/mlflow_run.json").read_text())["run_id"]


def large_or_checkpoint(listing: list[tuple[str, int]]) -> list:
    return [(p, n) for p, n in listing if p.startswith("models/checkpoints") or n > MB]


def test_git_add_all_after_a_run_takes_no_checkpoint_or_large_file(repo):
    project, env = repo
    assert (project / "models/checkpoints/meta.json").is_file()  # it was there to be added
    tracked = sh(project, env, "git", "ls-files").split()
    assert not large_or_checkpoint([(p, (project / p).stat().st_size) for p in tracked])
    assert "dvc.lock" in tracked and "reports/metrics.json" in tracked
    assert "clean" in sh(project, env, "git", "status")


def test_evaluate_only_experiment_reuses_training_and_gets_its_own_run(repo, baseline):
    project, env = repo
    at_baseline(project, env)
    before = snapshot(env, baseline)
    out = sh(project, env, "dvc", "exp", "run", "-n", "kl02", "-S", "evaluate.kl_max=0.2")
    assert "Running stage 'evaluate'" in out
    assert "Running stage 'train'" not in out and "Running stage 'judge'" not in out
    run = runs(env)["kl02"]
    assert run.info.status == "FINISHED"
    tags, params = run.data.tags, run.data.params
    assert tags["training_run_id"] == baseline and tags["dvc_exp_name"] == "kl02" and tags["result"] == "true"
    assert params["evaluate.kl_max"] == "0.2" and params["train.steps"] == str(STEPS)
    assert params["prepare.limit"] == "300" and params["judge.width"] == "4"
    assert client(env).get_run(baseline).info.run_name in tags["mlflow.note.content"]  # the link
    # The loss curves are in the new run too, the training's own numbers.
    c = client(env)
    for key in ("d_loss", "g_loss"):
        assert [(m.step, m.value) for m in sorted(c.get_metric_history(run.info.run_id, key), key=lambda m: m.step)] \
            == [(m.step, m.value) for m in sorted(c.get_metric_history(baseline, key), key=lambda m: m.step)]
    assert any(a.path.endswith(".png") for a in c.list_artifacts(run.info.run_id, "samples"))
    assert snapshot(env, baseline) == before  # nothing of the finished run changed


def test_judge_only_experiment_retrains_the_judge_alone(repo, baseline):
    project, env = repo
    at_baseline(project, env)
    before = snapshot(env, baseline)
    out = sh(project, env, "dvc", "exp", "run", "-n", "judge1", "-S", "judge.seed=1")
    assert "Running stage 'judge'" in out and "Running stage 'train'" not in out
    run = runs(env)["judge1"]
    assert run.info.status == "FINISHED" and run.data.tags["training_run_id"] == baseline
    assert run.data.params["judge.seed"] == "1"
    assert snapshot(env, baseline) == before


def test_stacked_mnist_experiment_trains_three_channels_with_the_same_judge(repo, baseline):
    """`dvc exp run -S prepare.dataset=stacked`: train, evaluate and export run on the
    stacked set drawn from the prepared digits; prepare and the judge are reused."""
    project, env = repo
    at_baseline(project, env)
    before = snapshot(env, baseline)
    out = sh(project, env, "dvc", "exp", "run", "-n", "stacked", "-S", "prepare.dataset=stacked",
             "-S", "prepare.stacked_train=600", "-S", "prepare.stacked_test=64")
    assert "Running stage 'train'" in out and "Running stage 'evaluate'" in out and "Running stage 'export'" in out
    assert "Running stage 'judge'" not in out and "Running stage 'prepare'" not in out
    run = runs(env)["stacked"]
    assert run.info.status == "FINISHED"
    assert run.data.params["prepare.dataset"] == "stacked" and run.data.params["prepare.stacked_train"] == "600"
    m = run.data.metrics
    assert m["modes_expected"] == 1000 and 1 <= m["modes_covered"] <= 64 and m["num_generated"] == 64
    card = json.loads((project / "export" / "model_card.json").read_text())
    assert card["output"]["shape"] == [None, 28, 28, 3]
    assert not card["promotion"]["promote"] and "3-channel" in card["promotion"]["reason"]
    training = client(env).get_run(run.data.tags["training_run_id"])
    assert training.data.params["prepare.dataset"] == "stacked" and training.data.params["train.n_images"] == "600"
    assert snapshot(env, baseline) == before


def test_params_seen_before_come_from_the_run_cache(repo):
    project, env = repo
    at_baseline(project, env)
    out = sh(project, env, "dvc", "exp", "run", "-n", "seed7", "-S", "train.seed=7")
    assert "Running stage 'train'" in out
    trained = runs(env)["seed7"]
    assert trained.data.tags["training_run_id"] == trained.info.run_id  # a fresh training, its own result
    before = snapshot(env, trained.info.run_id)

    # Training params seen before, an evaluate param new: training restored, not rerun.
    at_baseline(project, env)
    out = sh(project, env, "dvc", "exp", "run", "-n", "seed7kl", "-S", "train.seed=7", "-S", "evaluate.kl_max=0.3")
    assert "Stage 'train' is cached - skipping run, checking out outputs" in out, out[-3000:]
    assert "Running stage 'train'" not in out and "Running stage 'evaluate'" in out
    assert runs(env)["seed7kl"].data.tags["training_run_id"] == trained.info.run_id

    # All params seen before: every stage restored, no run added, the result is the earlier one.
    count = len(runs(env))
    at_baseline(project, env)
    out = sh(project, env, "dvc", "exp", "run", "-n", "seed7again", "-S", "train.seed=7")
    assert "Running stage" not in out and "Stage 'evaluate' is cached" in out
    assert len(runs(env)) == count
    assert snapshot(env, trained.info.run_id) == before


def exp_revs(project: Path, env: dict) -> dict[str, dict]:
    """Experiment name -> its row in `dvc exp show --json`."""
    shown = json.loads(subprocess.run(["dvc", "exp", "show", "--json"], cwd=project, env=env,
                                      capture_output=True, text=True, check=True).stdout)
    return {rev["name"]: rev for baseline in shown for exp in baseline.get("experiments") or []
            for rev in exp["revs"] if rev.get("name")}


def test_experiment_commits_carry_no_checkpoint_or_large_file(repo):
    project, env = repo
    refs = sh(project, env, "git", "for-each-ref", "--format=%(refname)", "refs/exps").split()
    assert len(refs) >= 3, refs
    for ref in refs:
        listing = [(line.split("\t")[1], int(line.split()[3]))
                   for line in sh(project, env, "git", "ls-tree", "-r", "-l", ref).splitlines()]
        assert not large_or_checkpoint(listing), ref


@pytest.fixture(scope="module")
def grid(repo, tmp_path_factory):
    """Three queued experiments, two at a time, on a store that does not exist yet."""
    project, env = repo
    at_baseline(project, env)
    store = tmp_path_factory.mktemp("fresh") / "mlflow.db"
    env = {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{store}",
           "ARCHS": "mlp", "LOSSES": "bce hinge wgan", "SEEDS": "1", "JOBS": "2", "GRID_SET": ""}
    out = sh(project, env, "bash", "ops/grid.sh")
    return project, env, out


def test_grid_runs_line_up_with_dvc_exp_show(grid):
    project, env, out = grid
    assert "grid: 3 experiments: 0 running, 0 queued, 3 done, 0 failed" in out
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


def test_mlflow_ui_lists_the_grid_with_a_metric_column(mlflow_ui):
    sys.path.insert(0, str(ROOT / "ops"))
    import mlflow_ui as ui

    if ui.chromium() is None:
        pytest.skip("needs Debian's chromium (make system-deps)")
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
