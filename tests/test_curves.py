"""bench/curves.py: quality against training time, a curve per recipe and seed, each an
MLflow run, and the table and figure over the seeds made from the store's runs."""
from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path

import pytest

from defaults import params_yaml
from pipeline import classifier, data, tracking
from test_stacked import oracle_judge, synthetic_digits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import curves  # noqa: E402

TINY = dict(
    prepare=dict(dataset="stacked", stacked_train=400, stacked_test=300),
    train=dict(arch="mlp", steps=4, batch_size=8, z_dim=8, virtual_labels=0, jit_compile=False, g_steps=2,
               standing_samples=64, mlp={"g_units": [16], "d_units": [16]}),
    evaluate=dict(num_samples=300, l1_samples=0))


@pytest.fixture
def stacked_work(tmp_path):
    """Synthetic digits, a judge that reads them exactly and tiny Stacked MNIST params."""
    import keras

    xa, ya = synthetic_digits(per_digit=30, seed=0)
    xt, yt = synthetic_digits(per_digit=30, seed=1)
    data.save_npz(data.Mnist(xa, ya, xt, yt), tmp_path / "mnist.npz")
    oracle = oracle_judge()  # as the judge stage saves a judge: probs out, a layer named features
    features = keras.layers.Identity(name=classifier.FEATURES)(oracle.outputs[0])
    keras.Model(oracle.inputs, [oracle.outputs[1], features]).save(tmp_path / "judge.keras")
    (tmp_path / "params.yaml").write_text(params_yaml(**TINY))
    return tmp_path


@pytest.mark.slow
def test_the_curve_scores_modes_and_kl_of_a_stacked_training_on_the_way(stacked_work):
    """Every `every` steps (and at the end) the generator the stage would save is scored:
    every metric of the evaluation, or the class figures alone, which are the same numbers."""
    w = stacked_work
    full, classes = [], []
    curves.curve(w / "params.yaml", w / "mnist.npz", w / "judge.keras", 2, w, full.append, "all")
    curves.curve(w / "params.yaml", w / "mnist.npz", w / "judge.keras", 2, w, classes.append, "classes")
    assert [r["step"] for r in full] == [2, 4]  # the GAN's steps, though G updated twice in each
    for r in full:
        assert set(curves.SCORES["all"]) <= r.keys()
        assert 1 <= r["modes_covered"] <= 300 and r["class_kl"] > 0 and r["train_s"] > 0
    assert [set(r) for r in classes] == [{"step", "train_s", "modes_covered", "class_kl"}] * 2
    for a, b in zip(full, classes):  # the same training, samples and judge
        assert (a["modes_covered"], a["class_kl"]) == pytest.approx((b["modes_covered"], b["class_kl"]))
    assert (w / "generator.keras").is_file() and (w / "samples_000004.png").is_file()


@pytest.mark.slow
def test_each_seed_is_a_finished_run_kept_when_run_again_and_the_table_is_made_from_the_runs(
        stacked_work, monkeypatch):
    """Each (candidate, seed) is a FINISHED run of the curves experiment with a metric point per
    scored step; a second bench keeps the run of the same key and trains only the new seed; the
    table reads the store."""
    w = stacked_work
    for var in ("DVC_EXP_NAME", "DVC_ROOT"):  # run names depend on them
        monkeypatch.delenv(var, raising=False)
    uri = f"sqlite:///{w / 'curves.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # the bench sets it for its runs; restored after
    monkeypatch.setattr(tracking, "_CLIENT", None)
    args = ["--params", str(w / "params.yaml"), "--data", str(w / "mnist.npz"), "--judge", str(w / "judge.keras"),
            "--work", str(w / "work"), "--tracking-uri", uri, "--every", "2", "--scores", "classes", "--no-results"]

    def bench(*more: str) -> str:
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            curves.main([*args, *more])
        return printed.getvalue()

    first = bench("--seeds", "0")
    [run] = tracking.curve_runs()
    assert run["name"] == "default-seed0" and run["params"]["train.seed"] == "0"
    assert [s for s, _ in tracking.metric_history(run["run_id"], "class_kl")] == [2, 4]
    assert [s for s, _ in tracking.metric_history(run["run_id"], "train_s")] == [2, 4]
    assert tracking.list_artifacts(run["run_id"], "samples")
    assert "| default | 4 | 0 |" in first

    second = bench("--seeds", "0", "1")
    assert second.count("scored before, kept") == 1
    runs = tracking.curve_runs()
    assert [r["name"] for r in runs] == ["default-seed0", "default-seed1"]
    assert len({r["tags"][curves.TAG_KEY] for r in runs}) == 2
    assert len({r["tags"][curves.TAG_SETTING] for r in runs}) == 1  # one table row's seeds
    assert "| default | 4 | 0 1 |" in second
    assert "| default | 4 | 0 1 |" in bench("--table-only")


def test_the_table_gives_each_score_over_the_seeds_and_names_a_candidate_of_two_settings():
    rows = [{"candidate": "a", "setting": "s1", "seed": seed, "step": 10, "train_s": t, "modes_covered": m,
             "class_kl": kl} for seed, t, m, kl in ((0, 60.0, 900, 1.0), (1, 90.0, 1000, 0.5), (2, 61.0, 950, 0.3))]
    agg = curves.aggregate(rows)
    assert len(agg) == 1 and agg[0]["seeds"] == [0, 1, 2] and agg[0]["train_s"] == 61.0  # the median
    assert agg[0]["modes_covered"]["mean"] == pytest.approx(950) and agg[0]["modes_covered"]["min"] == 900
    assert agg[0]["class_kl"]["std"] == pytest.approx(0.2944, abs=1e-4)
    assert "| a | 10 | 0 1 2 | 61 | 950 ± 40.8 | 0.6 ± 0.294 |" in curves.table(agg)
    other = dict(rows[0], setting="s2")
    names = {r["candidate"] for r in curves.aggregate(rows + [other])}
    assert names == {"a (s1)", "a (s2)"}


def test_the_figure_draws_modes_and_kl_against_minutes_a_line_per_candidate(tmp_path):
    """One SVG, a line per candidate in each of its two panels, named with its seeds; the same
    file for the same rows (no date inside)."""
    rows = [{"candidate": name, "setting": name, "seed": seed, "step": step, "train_s": 60.0 * step,
             "modes_covered": modes + seed, "class_kl": kl}
            for name, seeds, pts in (("a", (0, 1), ((1, 100, 3.0), (2, 400, 1.0))), ("b", (0,), ((1, 700, 0.5),)))
            for seed in seeds for step, modes, kl in pts]
    agg = curves.aggregate(rows)
    curves.plot(agg, tmp_path / "one.svg")
    curves.plot(agg, tmp_path / "two.svg")
    svg = (tmp_path / "one.svg").read_text()
    assert svg.startswith("<?xml") and "modes covered" in svg and "class KL" in svg
    assert "<!-- a (2 seeds) -->" in svg and "<!-- b (1 seed) -->" in svg
    assert (tmp_path / "one.svg").read_bytes() == (tmp_path / "two.svg").read_bytes()
