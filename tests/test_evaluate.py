"""The evaluate stage on generators built here, against real MNIST and a judge
trained on part of it: copies of training images are flagged as memorization,
one digit as collapse, held-out test images pass the gate, noise fails it."""
from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from keras import ops

from defaults import evaluate as evaluate_params
from defaults import params_yaml
from pipeline import classifier, data, evaluate

def pair(scores: evaluate.Scores) -> tuple[dict, dict]:
    """The metrics and the verdict as metrics.json and verdict.json hold them."""
    return scores.metrics, scores.verdict.as_dict()


N = 500  # one sampling batch: the table generators below map a batch's z to distinct images


@pytest.fixture(scope="module")
def mnist():
    return data.load_pypi()[0]


@pytest.fixture(scope="module")
def judge_model(quick_judge):
    """The suite's quick judge (conftest): weaker than the stage's, quicker."""
    path, report = quick_judge
    assert report["test_accuracy"] > 0.95, report
    return path


@keras.saving.register_keras_serializable(package="test_evaluate")
class Table(keras.layers.Layer):
    """z -> a fixed image per z: the rank of z[:, 0] within the batch indexes a table,
    so one batch gives distinct images, as a generator that stores images would."""

    def __init__(self, table, **kwargs):
        super().__init__(**kwargs)
        self.table = ops.convert_to_tensor(np.asarray(table, np.float32))

    def call(self, z):
        return ops.take(self.table, ops.argsort(ops.argsort(z[:, 0])), axis=0)


def table_generator(pixels: np.ndarray, z_dim: int = 8):
    assert len(pixels) >= N
    z = keras.Input((z_dim,))
    from pipeline.images import from_uint8

    return keras.Model(z, Table(from_uint8(pixels))(z))


def heldout(mnist, p):
    """Test images the evaluation does not compare against."""
    used = evaluate.real_indices(len(mnist.x_test), p.num_samples, p.seed)
    return np.setdiff1d(np.arange(len(mnist.x_test)), used)


def run_stage(generator, mnist, judge_path):
    p = evaluate_params(num_samples=N, l1_samples=0)
    return pair(evaluate.evaluate(generator, classifier.load(judge_path), mnist, p))


@pytest.mark.slow
def test_training_images_are_flagged_as_memorization(mnist, judge_model):
    pick = np.random.default_rng(1).choice(len(mnist.x_train), 2000, replace=False)
    m, v = run_stage(table_generator(mnist.x_train[pick]), mnist, judge_model)
    assert v["memorization"] and not v["quality_gate_passed"], v
    assert m["memorization"] == 1 and m["l1_nearest_train_gen"] == 0 and m["copy_rate_gen"] == 1
    assert m["copying_z"] < -3 and any(r.startswith("memorization: copying_z") for r in v["reasons"])


@pytest.mark.slow
def test_one_digit_is_flagged_as_collapse_not_as_copying(mnist, judge_model):
    p = evaluate_params(num_samples=N, l1_samples=0)
    ones = np.intersect1d(heldout(mnist, p), np.flatnonzero(mnist.y_test == 1))
    m, v = run_stage(table_generator(mnist.x_test[ones]), mnist, judge_model)
    assert v["mode_collapse"] and not v["quality_gate_passed"], v
    assert not v["memorization"], v  # "1"s lie near training "1"s: compared with real "1"s, not copying
    assert m["modes_covered"] == 1 and m["modes_expected"] == 10 and m["class_kl"] > 1


@pytest.mark.slow
def test_heldout_test_images_pass_the_gate(mnist, judge_model):
    p = evaluate_params(num_samples=N, l1_samples=0)
    m, v = run_stage(table_generator(mnist.x_test[heldout(mnist, p)]), mnist, judge_model)
    assert v == {"mode_collapse": False, "memorization": False, "quality_gate_passed": True, "reasons": []}
    assert m["quality_gate_passed"] == 1 and m["modes_covered"] == 10
    assert 0.9 < m["memorization_ratio"] < 1.1 and 0.9 < m["diversity_ratio"] < 1.1
    assert abs(m["copying_z"]) < 3


@pytest.mark.slow
def test_l1_figures_on_a_subset_keep_the_verdicts(mnist, judge_model):
    """evaluate.l1_samples: the L1 figures on 200 of the 500 samples; copies are still
    copies, held-out images still pass, and the judge's figures use every sample."""
    judge = classifier.load(judge_model)
    full, sub = evaluate_params(num_samples=N, l1_samples=0), evaluate_params(num_samples=N, l1_samples=200)
    gi, ri = evaluate.l1_indices(N, N, sub)
    assert len(gi) == len(ri) == 200 and len(np.unique(ri)) == 200 and ri.max() < N
    assert [len(a) for a in evaluate.l1_indices(N, N, full)] == [N, N]

    pick = np.random.default_rng(1).choice(len(mnist.x_train), 2000, replace=False)
    m, v = pair(evaluate.evaluate(table_generator(mnist.x_train[pick]), judge, mnist, sub))
    assert m["num_l1"] == 200 and m["num_generated"] == N
    assert v["memorization"] and m["copy_rate_gen"] == 1 and m["copying_z"] < -3, v

    gen = table_generator(mnist.x_test[heldout(mnist, full)])
    m_full, _ = pair(evaluate.evaluate(gen, judge, mnist, full))
    m_sub, v_sub = pair(evaluate.evaluate(gen, judge, mnist, sub))
    assert not v_sub["memorization"] and not v_sub["mode_collapse"], v_sub
    for key in ("fcd", "classifier_score_ratio", "precision", "recall", "class_kl", "kid"):
        assert m_sub[key] == m_full[key], key  # the judge's figures: every sample
    assert m_sub["l1_pairwise_gen"] != m_full["l1_pairwise_gen"]  # the L1 ones: the subset
    assert abs(m_sub["diversity_ratio"] - m_full["diversity_ratio"]) < 0.05


@pytest.mark.slow
def test_one_digit_dataset_is_not_collapse_for_one_digit(mnist, judge_model, tmp_path):
    """prepare.digits=[7]: real data holds one class, so a generator of 7s covers every mode."""
    keep_tr, keep_te = mnist.y_train == 7, mnist.y_test == 7
    sevens = data.Mnist(mnist.x_train[keep_tr], mnist.y_train[keep_tr], mnist.x_test[keep_te], mnist.y_test[keep_te])
    p = evaluate_params(num_samples=N, l1_samples=0)
    gen = table_generator(sevens.x_test[heldout(sevens, p)])
    m, v = pair(evaluate.evaluate(gen, classifier.load(judge_model), sevens, p))
    assert m["modes_expected"] == 1 and m["modes_covered"] == 1 and m["class_kl"] < p.kl_max
    assert not v["mode_collapse"] and not v["memorization"], v


@pytest.mark.slow
def test_cli_scores_any_saved_generator_without_mlflow(mnist, judge_model, tmp_path, monkeypatch):
    """Noise from an untrained dense net, saved and scored with `--generator PATH --out DIR`."""
    keras.utils.set_random_seed(0)
    z = keras.Input((16,))
    x = keras.layers.Dense(784, activation="tanh", kernel_initializer=keras.initializers.RandomNormal(0, 3))(z)
    keras.Model(z, keras.layers.Reshape((28, 28, 1))(x)).save(tmp_path / "noise.keras")
    sub = data.Mnist(mnist.x_train[:5000], mnist.y_train[:5000], mnist.x_test, mnist.y_test)
    data.save_npz(sub, tmp_path / "data/prepared/mnist.npz")  # the default --data
    (tmp_path / "params.yaml").write_text(params_yaml(evaluate={"num_samples": 300}))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    evaluate.main(["--generator", "noise.keras", "--judge", str(judge_model), "--out", "scored"])
    m = json.loads((tmp_path / "scored/metrics.json").read_text())
    v = json.loads((tmp_path / "scored/verdict.json").read_text())
    assert m["quality_gate_passed"] == 0 and not v["quality_gate_passed"] and v["reasons"]
    assert any(r.startswith("quality: fcd") for r in v["reasons"])
    assert m["num_generated"] == 300 and m["memorization_ratio"] > 2
    for name in ("class_hist.csv", "nearest_train.png", "per_class/class_0.png", "per_class.json"):
        assert (tmp_path / "scored" / name).is_file(), name
    assert not (tmp_path / "mlflow.db").exists()  # no run file: nothing tracked


GOOD = {"modes_covered": 10, "modes_expected": 10, "class_kl": 0.01, "diversity_ratio": 1.0,
        "class_diversity_min": 0.9, "duplicate_rate_gen": 0.02, "duplicate_rate_real": 0.02, "copying_z": 0.0,
        "copy_rate_gen": 0.0, "copy_rate_real": 0.0, "classifier_score_ratio": 1.0, "fcd": 2.0, "precision": 0.9,
        "recall": 0.9}


@pytest.mark.parametrize("key, value, kind, reason", [
    ("modes_covered", 9, "mode_collapse", "modes_covered=9 < modes_expected=10"),
    ("class_kl", 0.5, "mode_collapse", "class_kl=0.5 > kl_max="),
    ("diversity_ratio", 0.1, "mode_collapse", "diversity_ratio=0.1 < diversity_min="),
    ("class_diversity_min", 0.1, "mode_collapse", "class_diversity_min=0.1 < diversity_min="),
    ("duplicate_rate_gen", 0.5, "mode_collapse", "duplicate_rate_gen-duplicate_rate_real=0.48 > duplicate_excess_max="),
    ("copying_z", -5.0, "memorization", "copying_z=-5 < copying_z_min="),
    ("copy_rate_gen", 0.5, "memorization", "copy_rate_gen-copy_rate_real=0.5 > copy_excess_max="),
    ("classifier_score_ratio", 0.5, "quality", "classifier_score_ratio=0.5 < classifier_score_ratio_min="),
    ("fcd", 500.0, "quality", "fcd=500 > fcd_max="),
    ("precision", 0.1, "quality", "precision=0.1 < precision_min="),
    ("recall", 0.1, "quality", "recall=0.1 < recall_min="),
])
def test_each_rule_fails_alone_and_names_its_value_and_bound(key, value, kind, reason):
    p = evaluate_params()
    assert evaluate.verdict(GOOD, p) == evaluate.Verdict(False, False, True, [])
    v = evaluate.verdict({**GOOD, key: value}, p)
    assert not v.quality_gate_passed and len(v.reasons) == 1 and v.reasons[0].startswith(f"{kind}: {reason}")
    assert (v.mode_collapse, v.memorization) == (kind == "mode_collapse", kind == "memorization")
