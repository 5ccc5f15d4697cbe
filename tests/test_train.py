import subprocess
import sys

import numpy as np
import pytest

from pipeline import data


@pytest.fixture
def tiny(tmp_path):
    rng = np.random.default_rng(0)
    ds = data.Mnist(rng.integers(0, 256, (10, 28, 28), dtype=np.uint8), rng.integers(0, 10, 10),
                    rng.integers(0, 256, (4, 28, 28), dtype=np.uint8), rng.integers(0, 10, 4))
    data.save_npz(ds, tmp_path / "mnist.npz")
    return tmp_path


def run_train(tmp_path, params_text):
    (tmp_path / "params.yaml").write_text(params_text)
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "TF_CPP_MIN_LOG_LEVEL": "2",
           "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-m", "pipeline.train", "--params", str(tmp_path / "params.yaml"),
         "--data", str(tmp_path / "mnist.npz"), "--model", str(tmp_path / "models/generator.keras"),
         "--reports", str(tmp_path / "reports/train"), "--run-file", str(tmp_path / "reports/run.json")],
        capture_output=True, text=True, env=env)


def test_failure_marks_mlflow_run_failed_and_writes_nothing(tiny):
    proc = run_train(tiny, "train: {arch: mlp, batch_size: 32, steps: 2}\n")
    assert proc.returncode == 1
    assert "train.batch_size=32 is larger than the training set (10 images)" in proc.stderr
    assert not (tiny / "models/generator.keras").exists() and not (tiny / "reports/run.json").exists()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tiny / 'mlflow.db'}")
    exp = client.get_experiment_by_name("mnist-gan")
    runs = client.search_runs([exp.experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]


def test_same_seed_same_losses(tiny):
    import csv

    losses = []
    for attempt in range(2):
        out = tiny / f"a{attempt}"
        out.mkdir()
        (out / "mnist.npz").write_bytes((tiny / "mnist.npz").read_bytes())
        proc = run_train(out, "train: {arch: mlp, batch_size: 4, steps: 5, seed: 7}\n")
        assert proc.returncode == 0, proc.stderr[-2000:]
        losses.append([(r["d_loss"], r["g_loss"]) for r in csv.DictReader(open(out / "reports/train/losses.csv"))])
    assert len(losses[0]) == 5 and losses[0] == losses[1]
