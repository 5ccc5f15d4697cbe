"""The judge stage's entry point on tiny data, and its params' validation."""
import json

import numpy as np
import pytest

from defaults import evaluate as evaluate_params
from defaults import judge as judge_params
from defaults import params_yaml
from pipeline import classifier, data, judge
from pipeline.errors import StageError


def test_main_writes_model_and_report(tmp_path):
    rng = np.random.default_rng(0)
    ds = data.Mnist(rng.integers(0, 256, (64, 28, 28), dtype=np.uint8), rng.integers(0, 10, 64),
                    rng.integers(0, 256, (16, 28, 28), dtype=np.uint8), rng.integers(0, 10, 16))
    data.save_npz(ds, tmp_path / "mnist.npz")
    (tmp_path / "params.yaml").write_text(params_yaml(judge={"epochs": 1, "batch_size": 16, "width": 4,
                                                             "feature_dim": 8}))
    judge.main(["--params", str(tmp_path / "params.yaml"), "--data", str(tmp_path / "mnist.npz"),
                "--model", str(tmp_path / "judge.keras"), "--report", str(tmp_path / "judge.json")])
    report = json.loads((tmp_path / "judge.json").read_text())
    assert report["num_train"] == 64 and 0 <= report["test_accuracy"] <= 1
    feats, probs = classifier.embed(classifier.load(tmp_path / "judge.keras"), ds.x_test)
    assert feats.shape == (16, 8) and probs.shape == (16, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-5)


@pytest.mark.parametrize("raw, key", [({"epochs": 0}, "judge.epochs"), ({"width": "wide"}, "judge.width"),
                                      ({"seeds": 1}, "judge.seeds")])
def test_bad_params_name_the_key(raw, key):
    with pytest.raises(StageError, match=key):
        judge_params(**raw)


def test_evaluate_thresholds_are_validated():
    with pytest.raises(StageError, match="evaluate.precision_min"):
        evaluate_params(precision_min=2)
