"""The whole path and the experiment loop on tiny params, with real DVC, MLflow and
BentoML in a temp git repo: `dvc repro` and the commit of its results (its outputs,
its MLflow run, a real `bentoml serve` of it), then `dvc exp run` of an
evaluate-only, a judge-only, a Stacked MNIST and a repeated experiment (DVC's run
cache), and what reaches git. One repro serves both halves, in this order: the
result's tests come first, while it is the store's only run. The queued grid is
test_grid.py's."""
from __future__ import annotations

import csv
import io
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import requests
import yaml
from PIL import Image

from e2e_util import Served, copy_project, env_for, set_params

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
STEPS = 6
TINY = dict(prepare={"limit": 300},
            train={"steps": STEPS, "batch_size": 32, "sample_every": 3, "log_every": 4, "z_dim": 24,
                   "virtual_labels": 8, "standing_samples": 64,
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
    # auto: bfloat16 end to end where the CPU computes it, as the exported model must still serve float32.
    set_params(project, **{**TINY, "train": {**TINY["train"], "precision": "auto"}})
    env = env_for(tmp)
    env.update(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    for cmd in (["git", "add", "-A"], ["git", "commit", "-qm", "project"], ["dvc", "repro"],
                ["git", "add", "-A"], ["git", "commit", "-qm", "dvc repro"]):
        sh(project, env, *cmd)
    return project, env, tmp


@pytest.fixture(scope="module")
def baseline(repo):
    project, env, _ = repo
    return json.loads((project / "reports/mlflow_run.json").read_text())["run_id"]


# The result of `dvc repro`, while it is the store's only run.

@pytest.fixture(scope="module")
def mlflow_client(repo):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=repo[1]["MLFLOW_TRACKING_URI"])


def test_outputs(repo):
    project = repo[0]
    with np.load(project / "data/prepared/mnist.npz") as f:
        assert f["x_train"].dtype == np.uint8 and f["x_train"].shape == (300, 28, 28)
        assert f["x_test"].shape == (300, 28, 28)
    report = json.loads((project / "reports/data.json").read_text())
    assert report["source"] == "pypi" and sum(report["train"]["per_class"].values()) == 300

    rows = list(csv.DictReader(open(project / "reports/train/losses.csv")))
    assert [int(r["step"]) for r in rows] == list(range(1, STEPS + 1))
    assert all(np.isfinite(float(r["d_loss"])) and np.isfinite(float(r["g_loss"])) for r in rows)
    grids = sorted(p.name for p in (project / "reports/train/samples").iterdir())
    assert grids == ["step_000003.png", "step_000006.png"]
    assert (project / "reports/train/progress.gif").is_file()
    assert json.loads((project / "models/checkpoints/meta.json").read_text())["complete"] is True

    m = json.loads((project / "reports/metrics.json").read_text())
    for key in ("l1_nearest_train_gen", "l1_nearest_train_real", "memorization_ratio",
                "l1_pairwise_gen", "l1_pairwise_real", "diversity_ratio"):
        assert 0 <= m[key] < 10, key
    assert m["memorization_ratio"] == pytest.approx(m["l1_nearest_train_gen"] / m["l1_nearest_train_real"])

    card = json.loads((project / "export/model_card.json").read_text())
    assert card["z_dim"] == 24 and card["output"]["range"] == [-1.0, 1.0]
    assert card["data_sha256"] == report["data_sha256"] and card["metrics"] == m

    judge = json.loads((project / "reports/judge.json").read_text())
    assert judge["num_train"] == 300 and 0 <= judge["test_accuracy"] <= 1
    assert (project / "models/judge.keras").is_file()
    for key in ("copying_z", "copy_rate_gen", "duplicate_rate_gen", "class_diversity_min", "modes_covered",
                "modes_expected", "class_kl", "class_entropy_gen", "judge_confidence_gen",
                "classifier_score_gen", "fcd", "kid", "kid_std", "precision", "recall", "density", "coverage",
                "mode_collapse", "memorization", "quality_gate_passed"):
        assert np.isfinite(m[key]), key
    verdict = json.loads((project / "reports/eval/verdict.json").read_text())
    assert card["verdict"] == verdict and verdict["quality_gate_passed"] == bool(m["quality_gate_passed"])
    assert not verdict["quality_gate_passed"] and verdict["reasons"]  # 6 steps make no digits
    hist = list(csv.DictReader(open(project / "reports/eval/class_hist.csv")))
    assert [r["digit"] for r in hist] == [f"{d} {side}" for d in range(10) for side in ("generated", "real")]
    assert sum(float(r["share"]) for r in hist if r["digit"].endswith("real")) == pytest.approx(1, abs=1e-3)
    assert (project / "reports/eval/nearest_train.png").is_file()
    assert (project / "export/generator/saved_model.pb").is_file()

    status = subprocess.run(["dvc", "status"], cwd=project, env=repo[1], capture_output=True, text=True)
    assert "up to date" in status.stdout, status.stdout


def test_mlflow_run(repo, mlflow_client):
    """One run holds the whole result: named, tagged, every stage's params, all metrics."""
    project = repo[0]
    record = json.loads((project / "reports/mlflow_run.json").read_text())
    run_id = record["run_id"]
    assert record["training_run_id"] == run_id  # the result joined its own training's run
    assert json.loads((project / "reports/train/run.json").read_text())["run_id"] == run_id
    runs = mlflow_client.search_runs([record["experiment_id"]])
    assert [r.info.run_id for r in runs] == [run_id]
    run = mlflow_client.get_run(run_id)
    assert run.info.status == "FINISHED"
    p = run.data.params
    assert (p["prepare.limit"], p["train.steps"], p["judge.width"], p["evaluate.num_samples"]) == \
        ("300", str(STEPS), "4", "64")
    tags = run.data.tags
    assert run.info.run_name == f"mlp-bce-{tags['params_hash']}" and len(tags["params_hash"]) == 8
    # The commit the results were made from, the one before they were committed.
    commit = subprocess.run(["git", "rev-parse", "HEAD~1"], cwd=project, capture_output=True, text=True).stdout.strip()
    assert tags["git_commit"] == commit and tags["result"] == "true" and "dvc_exp_name" not in tags
    metrics = json.loads((project / "reports/metrics.json").read_text())
    assert {k: run.data.metrics[k] for k in metrics} == pytest.approx({k: float(v) for k, v in metrics.items()})
    assert run.data.metrics["judge_test_accuracy"] == json.loads((project / "reports/judge.json").read_text())["test_accuracy"]
    for key in ("d_loss", "g_loss"):
        hist = mlflow_client.get_metric_history(run_id, key)
        assert sorted(h.step for h in hist) == list(range(1, STEPS + 1))
    assert "diversity_ratio" in run.data.metrics
    artifacts = {a.path for a in mlflow_client.list_artifacts(run_id)}
    assert "model_card.json" in artifacts
    evals = {a.path for a in mlflow_client.list_artifacts(run_id, "eval")}
    assert {"eval/verdict.json", "eval/class_hist.csv", "eval/nearest_train.png"} <= evals
    assert "fcd" in run.data.metrics and "quality_gate_passed" in run.data.metrics
    samples = [a.path for a in mlflow_client.list_artifacts(run_id, "samples")]
    assert any(p.endswith(".png") for p in samples)
    versions = mlflow_client.search_model_versions("name='mnist-gan-generator'")
    assert [v.run_id for v in versions] == [run_id]
    assert "champion" not in mlflow_client.get_registered_model("mnist-gan-generator").aliases  # gate failed
    assert run.data.tags["promotion.promoted"] == "False" and "quality gate" in run.data.tags["promotion.reason"]
    card = json.loads((project / "export/model_card.json").read_text())
    assert card["mlflow_run_id"] == run_id and card["registered_model"]["version"] == str(versions[0].version)
    assert card["params"]["train.steps"] == STEPS and card["promotion"]["promote"] is False
    from pipeline.distribution import precision_for

    expected = precision_for(yaml.safe_load((project / "params.yaml").read_text())["train"]["precision"])
    assert card["training_precision"] == card["params"]["train.precision"] == expected
    assert "tracking_uri" in record and "@" not in record["tracking_uri"]




class TestServed:
    """A real `bentoml serve` of the result, up while these tests run."""

    @pytest.fixture(scope="class")
    def served(self, repo):
        project, env, _ = repo
        # No version passed the gate, so there is no champion: serve the newest export by name.
        with Served(project, dict(env, MNIST_GAN_MODEL="latest")) as server:
            yield server, project


    def test_render_png(self, served):
        server, _ = served
        r = requests.post(f"{server.url}/render", json={"z": [0.5] * 24}, timeout=30)
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        img = Image.open(io.BytesIO(r.content))
        assert img.size == (28, 28) and img.mode == "L"


    def test_generate_matches_saved_model(self, served):
        import tensorflow as tf

        server, project = served
        z = np.random.default_rng(3).standard_normal((3, 24)).astype(np.float32)
        r = requests.post(f"{server.url}/generate", json={"z": z.tolist()}, timeout=30)
        assert r.status_code == 200, r.text
        got = np.asarray(r.json())
        assert got.shape == (3, 28, 28) and got.min() >= 0 and got.max() <= 1
        saved = tf.saved_model.load(str(project / "export/generator"))
        out = saved.serve(z)
        assert out.dtype == tf.float32  # also after a bfloat16 training (precision auto on such a CPU)
        expected = (out.numpy()[..., 0] + 1) / 2
        np.testing.assert_allclose(got, expected, atol=1e-5)


    @pytest.mark.parametrize("path, body, field", [
        ("/render", {"z": [0.1] * 5}, "z"),
        ("/generate", {"z": [[0.1] * 24, [0.1] * 23]}, "z[1]"),
        ("/generate", {"z": []}, "z"),
        ("/generate", {"z": [["x"] * 24]}, "z"),
        ("/render", {"w": [0.1] * 24}, "z"),
    ])
    def test_bad_input_is_400_naming_the_field(self, served, path, body, field):
        server, _ = served
        r = requests.post(f"{server.url}{path}", json=body, timeout=30)
        assert r.status_code == 400, (r.status_code, r.text)
        assert field in r.text
        assert requests.get(f"{server.url}/readyz", timeout=5).status_code == 200


    def test_no_champion_says_in_one_line_how_to_serve_another(self, repo):
        """`make serve` asks serving.selection first: with no champion it stops with one line."""
        import sys

        project, env, _ = repo
        proc = subprocess.run([sys.executable, "-m", "serving.selection"], cwd=project, env=env,
                              capture_output=True, text=True)
        assert proc.returncode == 1
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "no champion yet" in lines[0] and "MODEL=latest" in lines[0], proc.stderr


    def test_info_says_what_is_served_and_why(self, served):
        server, project = served
        info = requests.get(f"{server.url}/info", timeout=30).json()
        assert info["selected"]["by"] == "latest" and "asked for by name" in info["selected"]["reason"]
        card = json.loads((project / "export/model_card.json").read_text())
        assert info["registered_model"] == card["registered_model"] and info["mlflow_run_id"] == card["mlflow_run_id"]


# The experiment loop on that result.

def large_or_checkpoint(listing: list[tuple[str, int]]) -> list:
    return [(p, n) for p, n in listing if p.startswith("models/checkpoints") or n > MB]


def test_git_add_all_after_a_run_takes_no_checkpoint_or_large_file(repo):
    project, env, _ = repo
    assert (project / "models/checkpoints/meta.json").is_file()  # it was there to be added
    tracked = sh(project, env, "git", "ls-files").split()
    assert not large_or_checkpoint([(p, (project / p).stat().st_size) for p in tracked])
    assert "dvc.lock" in tracked and "reports/metrics.json" in tracked
    assert "clean" in sh(project, env, "git", "status")


def test_evaluate_only_experiment_reuses_training_and_gets_its_own_run(repo, baseline):
    project, env, _ = repo
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
    project, env, _ = repo
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
    project, env, _ = repo
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
    project, env, _ = repo
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
    project, env, _ = repo
    refs = sh(project, env, "git", "for-each-ref", "--format=%(refname)", "refs/exps").split()
    assert len(refs) >= 3, refs
    for ref in refs:
        listing = [(line.split("\t")[1], int(line.split()[3]))
                   for line in sh(project, env, "git", "ls-tree", "-r", "-l", ref).splitlines()]
        assert not large_or_checkpoint(listing), ref
