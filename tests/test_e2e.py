"""The whole path on tiny params: `dvc repro` in a temp git repo against a temp
MLflow store and BentoML home, then a real `bentoml serve` and real HTTP."""
from __future__ import annotations

import csv
import io
import json
import subprocess

import numpy as np
import pytest
import requests
import yaml
from PIL import Image

from e2e_util import Served, copy_project, env_for, set_params

pytestmark = pytest.mark.e2e
STEPS = 6


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    project = copy_project(tmp / "project")
    set_params(project,
               prepare={"limit": 300},
               # auto: bfloat16 end to end where the CPU computes it, as the exported model must still serve float32.
               train={"steps": STEPS, "batch_size": 32, "sample_every": 3, "log_every": 4, "z_dim": 24,
                      "virtual_labels": 8,
                      "checkpoint_every": 3, "jit_compile": False, "precision": "auto"},
               judge={"epochs": 1, "width": 4, "feature_dim": 16},
               evaluate={"num_samples": 64})
    env = env_for(tmp)
    proc = subprocess.run(["dvc", "repro"], cwd=project, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return project, env, tmp


@pytest.fixture(scope="module")
def mlflow_client(pipeline_run):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=pipeline_run[1]["MLFLOW_TRACKING_URI"])


def test_outputs(pipeline_run):
    project = pipeline_run[0]
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

    status = subprocess.run(["dvc", "status"], cwd=project, env=pipeline_run[1], capture_output=True, text=True)
    assert "up to date" in status.stdout, status.stdout


def test_mlflow_run(pipeline_run, mlflow_client):
    """One run holds the whole result: named, tagged, every stage's params, all metrics."""
    project = pipeline_run[0]
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
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True).stdout.strip()
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


@pytest.fixture(scope="module")
def served(pipeline_run):
    project, env, _ = pipeline_run
    # No version passed the gate, so there is no champion: serve the newest export by name.
    with Served(project, dict(env, MNIST_GAN_MODEL="latest")) as server:
        yield server, project


def test_render_png(served):
    server, _ = served
    r = requests.post(f"{server.url}/render", json={"z": [0.5] * 24}, timeout=30)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    img = Image.open(io.BytesIO(r.content))
    assert img.size == (28, 28) and img.mode == "L"


def test_generate_matches_saved_model(served):
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
def test_bad_input_is_400_naming_the_field(served, path, body, field):
    server, _ = served
    r = requests.post(f"{server.url}{path}", json=body, timeout=30)
    assert r.status_code == 400, (r.status_code, r.text)
    assert field in r.text
    assert requests.get(f"{server.url}/readyz", timeout=5).status_code == 200


def test_no_champion_says_in_one_line_how_to_serve_another(pipeline_run):
    """`make serve` asks serving.selection first: with no champion it stops with one line."""
    import sys

    project, env, _ = pipeline_run
    proc = subprocess.run([sys.executable, "-m", "serving.selection"], cwd=project, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no champion yet" in lines[0] and "MODEL=latest" in lines[0], proc.stderr


def test_info_says_what_is_served_and_why(served):
    server, project = served
    info = requests.get(f"{server.url}/info", timeout=30).json()
    assert info["selected"]["by"] == "latest" and "asked for by name" in info["selected"]["reason"]
    card = json.loads((project / "export/model_card.json").read_text())
    assert info["registered_model"] == card["registered_model"] and info["mlflow_run_id"] == card["mlflow_run_id"]
