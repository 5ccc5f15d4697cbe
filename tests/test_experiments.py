"""The experiment loop on tiny params, with real DVC and MLflow in a temp git
repo: `dvc repro` and the commit of its results, `dvc exp run` of an
evaluate-only, a judge-only, a Stacked MNIST and a repeated experiment (DVC's
run cache), and what reaches git. The queued grid is test_grid.py's."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from e2e_util import copy_project, env_for, set_params

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
STEPS = 6
TINY = dict(prepare={"limit": 300},
            train={"steps": STEPS, "batch_size": 32, "sample_every": 3, "log_every": 4, "z_dim": 24,
                   "virtual_labels": 8,
                   "checkpoint_every": 3, "jit_compile": False},
            judge={"epochs": 1, "width": 4, "feature_dim": 16},
            evaluate={"num_samples": 64})
MB = 1 << 20


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
    """`dvc repro` on tiny params, then the results committed as docs/pipeline.md says."""
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
    # Its own registered model, where it is the first to pass or not; never a digits champion.
    assert card["kind"] == "stacked" and card["registered_model"]["name"] == "mnist-gan-generator-stacked"
    assert card["name"] == "mnist_gan_generator_stacked"
    training = client(env).get_run(run.data.tags["training_run_id"])
    assert training.data.params["prepare.dataset"] == "stacked" and training.data.params["train.n_images"] == "600"
    assert snapshot(env, baseline) == before


def test_params_seen_before_come_from_the_run_cache(repo):
    """With a conditional experiment (train.condition: concat) as the new training: it
    trains, is scored per requested digit, and is registered as its own kind."""
    project, env = repo
    at_baseline(project, env)
    digits_versions = versions(env, "mnist-gan-generator")
    out = sh(project, env, "dvc", "exp", "run", "-n", "cond", "-S", "train.condition=concat")
    assert "Running stage 'train'" in out and "conditioned on the digit (concat)" in out
    trained = runs(env)["cond"]
    assert trained.data.tags["training_run_id"] == trained.info.run_id  # a fresh training, its own result
    assert trained.data.params["train.condition"] == "concat"
    assert 0 <= trained.data.metrics["cond_accuracy"] <= 1
    card = json.loads((project / "export" / "model_card.json").read_text())
    assert card["kind"] == "conditional" and card["classes"] == list(range(10))
    assert card["registered_model"]["name"] == "mnist-gan-generator-conditional"
    assert versions(env, "mnist-gan-generator") == digits_versions  # the digits' line is not touched
    before = snapshot(env, trained.info.run_id)

    # Training params seen before, an evaluate param new: training restored, not rerun.
    at_baseline(project, env)
    out = sh(project, env, "dvc", "exp", "run", "-n", "condkl", "-S", "train.condition=concat",
             "-S", "evaluate.kl_max=0.3")
    assert "Stage 'train' is cached - skipping run, checking out outputs" in out, out[-3000:]
    assert "Running stage 'train'" not in out and "Running stage 'evaluate'" in out
    assert runs(env)["condkl"].data.tags["training_run_id"] == trained.info.run_id

    # All params seen before: every stage restored, no run added, the result is the earlier one.
    count = len(runs(env))
    at_baseline(project, env)
    out = sh(project, env, "dvc", "exp", "run", "-n", "condagain", "-S", "train.condition=concat")
    assert "Running stage" not in out and "Stage 'evaluate' is cached" in out
    assert len(runs(env)) == count
    assert snapshot(env, trained.info.run_id) == before


def versions(env: dict, name: str) -> list[str]:
    return sorted(v.version for v in client(env).search_model_versions(f"name='{name}'"))


def test_experiment_commits_carry_no_checkpoint_or_large_file(repo):
    project, env = repo
    refs = sh(project, env, "git", "for-each-ref", "--format=%(refname)", "refs/exps").split()
    assert len(refs) >= 3, refs
    for ref in refs:
        listing = [(line.split("\t")[1], int(line.split()[3]))
                   for line in sh(project, env, "git", "ls-tree", "-r", "-l", ref).splitlines()]
        assert not large_or_checkpoint(listing), ref
