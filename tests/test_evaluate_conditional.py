"""The evaluate stage on class-conditional generators (z, digit) -> image built here
from held-out real images: one that draws the digit asked for passes, one that
ignores the digit or draws the next one fails the gate, one image per digit is
collapse; a plain generator's scores gain nothing. Those verdicts need a trained
judge (slow); the plumbing runs with an untrained one.

Run as a script, it prints the figures the conditional rules' thresholds in
params.yaml were calibrated on (docs/metrics.md#class-conditional-generators):

    python tests/test_evaluate_conditional.py --seeds 0 1 2 3 4   # after dvc repro judge
"""
from __future__ import annotations

import argparse
import json
import re

import keras
import numpy as np
import pytest
from keras import ops

from defaults import evaluate as evaluate_params
from defaults import judge as judge_params
from defaults import params_yaml
from pipeline import classifier, data, evaluate
from pipeline.images import from_uint8
from test_evaluate import GOOD, judge_model, mnist  # noqa: F401  (fixtures: MNIST and a quick judge)

N = 500          # 50 per digit
Z_DIM = 8
QUICK = {"num_samples": N, "l1_samples": 0, "kid_subsets": 5}   # KID's subsets are most of the time otherwise


@keras.saving.register_keras_serializable(package="test_evaluate_conditional")
class Lookup(keras.layers.Layer):
    """(z, digit) -> a stored image. z's first component is looked up among the
    evaluation's draw (evaluate.latents), which gives its place there and so a slot;
    the image is table[row, slot], the row being the digit plus `shift` (mod 10), or
    row 0 whatever the digit when `shift` is None. Every z of the draw maps to one
    image whatever the sampling batch."""

    def __init__(self, table, keys, slots, shift, **kwargs):
        super().__init__(**kwargs)
        table = np.asarray(table, np.float32)
        self.width, self.shift = table.shape[1], shift
        self.table = ops.convert_to_tensor(table.reshape(-1, *table.shape[2:]))
        order = np.argsort(keys, kind="stable")
        self.keys = ops.convert_to_tensor(np.asarray(keys, np.float32)[order])
        self.slots = ops.convert_to_tensor(np.asarray(slots, np.int32)[order])

    def call(self, z, digit):
        at = ops.clip(ops.searchsorted(self.keys, z[:, 0]), 0, self.keys.shape[0] - 1)
        slot = ops.take(self.slots, at)
        row = ops.zeros_like(slot) if self.shift is None else (ops.cast(digit, "int32") + self.shift) % 10
        return ops.take(self.table, row * self.width + slot, axis=0)


def conditional(table, keys, slots, shift) -> keras.Model:
    z, digit = keras.Input((Z_DIM,), name="z"), keras.Input((), dtype="int32", name="digit")
    return keras.Model([z, digit], Lookup(from_uint8(table[..., None]), keys, slots, shift)(z, digit))


def unused(ds: data.Mnist, p) -> np.ndarray:
    """Test images that neither the pooled nor the per-digit comparison uses, in random
    order: MNIST's test split holds its neater writers first."""
    digits = evaluate.requested_digits(ds.y_test, p.num_samples)
    used = np.union1d(evaluate.real_indices(len(ds.x_test), p.num_samples, p.seed),
                      evaluate.digit_real_indices(ds.y_test, digits, p.seed))
    return np.random.default_rng(1).permutation(np.setdiff1d(np.arange(len(ds.x_test)), used))


def known_truth(ds: data.Mnist, p) -> dict[str, keras.Model]:
    """Conditional generators of known truth for the draw of `p`, from unused held-out images:
    `digit` draws a new image of the digit asked for, `ignores` new images of any digit,
    `next` of the digit after the one asked for, `fixed` one image per digit."""
    free = unused(ds, p)
    digits = evaluate.requested_digits(ds.y_test, p.num_samples)
    # Each z of the draw: its place among those asked for the same digit.
    slots = np.zeros(len(digits), np.int64)
    for d in range(10):
        slots[digits == d] = np.arange(np.sum(digits == d))
    width = slots.max() + 1
    by_digit = np.stack([ds.x_test[free[ds.y_test[free] == d][:width]] for d in range(10)])
    keys = evaluate.latents(p.num_samples, Z_DIM, p.seed)[:, 0]
    mixed = ds.x_test[free[:p.num_samples]][None]
    return {
        "digit": conditional(by_digit, keys, slots, 0),
        "ignores": conditional(mixed, keys, np.arange(p.num_samples), None),
        "next": conditional(by_digit, keys, slots, 1),
        "fixed": conditional(by_digit, keys, np.zeros_like(slots), 0),
    }


@pytest.fixture(scope="module")
def small(mnist):
    """The test images and a fifth of the training ones (the judge's): the L1 search is the cost."""
    return data.Mnist(mnist.x_train[:12000], mnist.y_train[:12000], mnist.x_test, mnist.y_test)


@pytest.fixture(scope="module")
def untrained_judge(tmp_path_factory):
    """A judge with its initial weights: enough where only the plumbing is under test."""
    keras.utils.set_random_seed(0)
    path = tmp_path_factory.mktemp("untrained") / "judge.keras"
    classifier.build(judge_params()).save(path)
    return path


@pytest.fixture(scope="module")
def scored(small, judge_model):
    p = evaluate_params(**QUICK)
    judge = classifier.load(judge_model)
    return {name: evaluate.evaluate(g, judge, small, p) for name, g in known_truth(small, p).items()}


@pytest.mark.slow
def test_the_digit_asked_for_passes(scored):
    s = scored["digit"]
    m, v = s.metrics, s.verdict.as_dict()
    assert v == {"mode_collapse": False, "memorization": False, "quality_gate_passed": True, "reasons": []}
    assert m["num_generated"] == N and np.bincount(s.details.digits).tolist() == [N // 10] * 10
    assert 0.9 < m["cond_accuracy_ratio"] < 1.1 and m["digit_accuracy_ratio_min"] > 0.8
    assert m["cond_accuracy"] > 0.9 and m["cond_cross_entropy"] < 0.5
    assert 0.8 < m["digit_diversity_min"] and sorted(s.details.per_digit) == list(range(10))
    assert all(re.fullmatch(r"[\w.\-/ ]+", k) for k in m)  # MLflow's metric names


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ignores", "next"])
def test_a_generator_that_does_not_draw_the_digit_fails(scored, name):
    m, v = scored[name].metrics, scored[name].verdict
    assert not v.quality_gate_passed and not v.memorization, v
    quality = [r.split("=")[0] for r in v.reasons if r.startswith("quality")]
    assert quality == ["quality: cond_accuracy_ratio", "quality: digit_accuracy_ratio_min"]
    assert m["cond_accuracy"] < 0.2 and m["cond_cross_entropy"] > 3 * m["cond_cross_entropy_real"]
    # Real images of real digits: every figure on all of them together stays good.
    assert m["modes_covered"] == 10 and m["fcd"] < 10 and m["classifier_score_ratio"] > 0.9
    if name == "ignores":  # each digit's images are of every digit: more varied than the digit's, no collapse
        assert not v.mode_collapse and m["digit_diversity_min"] > 0.8, v
    else:  # "1"s asked for as "0"s vary less than real "0"s: collapse on 0 as well
        assert v.mode_collapse and m["diversity_ratio_digit_0"] < 0.6 and m["diversity_ratio_digit_1"] > 1, v


@pytest.mark.slow
def test_one_image_per_digit_is_collapse(scored):
    m, v = scored["fixed"].metrics, scored["fixed"].verdict
    assert v.mode_collapse and not v.quality_gate_passed, v
    assert m["digit_diversity_min"] == 0 and m["cond_accuracy"] > 0.8
    assert any(r.startswith("mode_collapse: digit_diversity_min=0 < cond_diversity_min") for r in v.reasons)


def test_the_figures_on_all_images_are_the_plain_ones(small, untrained_judge):
    """The pooled figures of a conditional generator are `score`'s on its images, as for a plain one."""
    p = evaluate_params(**QUICK)
    judge = classifier.load(untrained_judge)
    s = evaluate.evaluate(known_truth(small, p)["digit"], judge, small, p)
    real, labels = evaluate.real_subset(small.x_test, N, p.seed, small.y_test)
    plain = evaluate.score(s.generated, real, labels, small.x_train, judge, p).metrics
    figures = [k for k in plain if k not in ("mode_collapse", "memorization", "quality_gate_passed")]
    assert [s.metrics[k] for k in figures] == [plain[k] for k in figures]
    assert not any(k.startswith(("cond_", "digit_")) or "_digit_" in k for k in plain)
    assert {f"{key}_digit_{d}" for key in ("cond_accuracy", "fcd", "precision", "recall", "diversity_ratio")
            for d in range(10)} < set(s.metrics)


COND_GOOD = {**GOOD, "cond_accuracy": 0.99, "cond_accuracy_ratio": 1.0, "digit_accuracy_ratio_min": 0.98,
             "digit_diversity_min": 0.95}


@pytest.mark.parametrize("key, value, kind, reason", [
    ("cond_accuracy_ratio", 0.1, "quality", "cond_accuracy_ratio=0.1 < cond_accuracy_ratio_min="),
    ("digit_accuracy_ratio_min", 0.1, "quality", "digit_accuracy_ratio_min=0.1 < cond_accuracy_ratio_min="),
    ("digit_diversity_min", 0.1, "mode_collapse", "digit_diversity_min=0.1 < cond_diversity_min="),
])
def test_each_conditional_rule_fails_alone_and_only_for_conditional_scores(key, value, kind, reason):
    p = evaluate_params()
    assert evaluate.verdict(COND_GOOD, p) == evaluate.Verdict(False, False, True, [])
    v = evaluate.verdict({**COND_GOOD, key: value}, p)
    assert not v.quality_gate_passed and len(v.reasons) == 1 and v.reasons[0].startswith(f"{kind}: {reason}")
    assert v.mode_collapse == (kind == "mode_collapse")
    plain = {k: x for k, x in {**COND_GOOD, key: value}.items() if k != evaluate.CONDITIONAL}
    assert evaluate.verdict(plain, p).quality_gate_passed  # a plain generator's scores: no such rule


@pytest.mark.parametrize("key, value, needle", [
    ("cond_accuracy_ratio_min", 1.5, "evaluate.cond_accuracy_ratio_min: Input should be less than or equal to 1"),
    ("cond_accuracy_ratio_min", 0, "evaluate.cond_accuracy_ratio_min: Input should be greater than 0"),
    ("cond_diversity_min", 3, "evaluate.cond_diversity_min: Input should be less than or equal to 2"),
])
def test_the_conditional_thresholds_name_their_key_and_range(key, value, needle):
    from pipeline import params
    from pipeline.errors import StageError

    with pytest.raises(StageError, match=re.escape(needle)):
        params.override(evaluate_params(), {key: value})


def test_requested_digits_take_turns_and_respect_the_data():
    labels = np.array([7, 3, 3, 7, 9])
    assert evaluate.requested_digits(labels, 7).tolist() == [3, 7, 9, 3, 7, 9, 3]
    assert np.bincount(evaluate.requested_digits(np.arange(10), 2000)).tolist() == [200] * 10


def test_cli_scores_a_saved_conditional_generator(mnist, untrained_judge, tmp_path, monkeypatch):
    """A two-input net of Keras layers, saved and scored with `--generator PATH --out DIR`."""
    keras.utils.set_random_seed(0)
    z, digit = keras.Input((16,), name="z"), keras.Input((), dtype="int32", name="digit")
    x = keras.layers.Add()([z, keras.layers.Embedding(10, 16)(digit)])
    x = keras.layers.Dense(784, activation="tanh", kernel_initializer=keras.initializers.RandomNormal(0, 3))(x)
    keras.Model([z, digit], keras.layers.Reshape((28, 28, 1))(x)).save(tmp_path / "cond.keras")
    sub = data.Mnist(mnist.x_train[:2000], mnist.y_train[:2000], mnist.x_test[:3000], mnist.y_test[:3000])
    data.save_npz(sub, tmp_path / "data/prepared/mnist.npz")  # the default --data
    (tmp_path / "params.yaml").write_text(params_yaml(evaluate={"num_samples": 200, "kid_subsets": 5}))
    monkeypatch.chdir(tmp_path)
    evaluate.main(["--generator", "cond.keras", "--judge", str(untrained_judge), "--out", "scored"])
    m = json.loads((tmp_path / "scored/metrics.json").read_text())
    per_digit = json.loads((tmp_path / "scored/per_digit.json").read_text())
    assert m["num_generated"] == 200 and m["quality_gate_passed"] == 0
    assert 0 <= m["cond_accuracy"] <= 1 and 0 <= m["cond_accuracy_real"] <= 1 and "fcd_digit_9" in m
    assert sorted(per_digit, key=int) == [str(d) for d in range(10)] and per_digit["3"]["num_generated"] == 20
    assert json.loads((tmp_path / "scored/protocol.json").read_text())["conditional"] is True
    assert (tmp_path / "scored/per_digit/digit_0.png").is_file()


# --- calibration: the figures behind the thresholds, at params.yaml's evaluate section ---

CALIBRATION_KEYS = ("cond_accuracy", "cond_accuracy_real", "cond_accuracy_ratio", "digit_accuracy_ratio_min",
                    "digit_diversity_min", "cond_cross_entropy", "cond_cross_entropy_real")


def main(argv: list[str] | None = None) -> None:
    from pipeline import params

    ap = argparse.ArgumentParser(description="The conditional figures of generators of known truth.")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", default="data/prepared/mnist.npz")
    ap.add_argument("--judge", default="models/judge.keras")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="evaluate.seed values to draw with")
    args = ap.parse_args(argv)
    base = params.load("evaluate", args.params)
    ds = data.training_set(data.load_prepared(args.data), params.load("prepare", args.params))
    judge = classifier.load(args.judge)
    print("| generator | seed | " + " | ".join(CALIBRATION_KEYS) + " | verdict |")
    print("|---" * (len(CALIBRATION_KEYS) + 3) + "|")
    for seed in args.seeds:
        p = params.override(base, {"seed": seed})
        for name, g in known_truth(ds, p).items():
            s = evaluate.evaluate(g, judge, ds, p)
            v = s.verdict
            said = "pass" if v.quality_gate_passed else "; ".join(r.split("=")[0] for r in v.reasons)
            print(f"| {name} | {seed} | " + " | ".join(f"{s.metrics[k]:.3f}" for k in CALIBRATION_KEYS)
                  + f" | {said} |", flush=True)


if __name__ == "__main__":
    main()
