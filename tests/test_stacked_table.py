"""bench/stacked.py's table from real MLflow result runs (a sqlite store): one row
per method and budget with the seeds' mean and spread, runs of other datasets left
out, the papers' rows beside, and each run's wall time read off its MLflow record;
the table goes to the results page `--results` names."""
from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import pytest

from pipeline import tracking
from tests.test_compare import use_store

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench import stacked  # noqa: E402

EVAL_S = 0.3


def make_run(arch: str, pack: int, seed: int, modes: int, kl: float, dataset: str = "stacked", ema: float = 0.0) -> str:
    params = {"train.arch": arch, "train.loss": "bce", "train.pack": pack, "train.seed": seed,
              "train.steps": 1000, "train.batch_size": 64, "prepare.dataset": dataset,
              "prepare.stacked_train": 128000, "evaluate.num_samples": 26000, "train.ema": ema}
    with tracking.training_run(params) as run:
        run.log_metrics([("d_loss", 1.0, step) for step in (1, 2)])
        training = {"run_id": run.run_id, "params": params}
    time.sleep(EVAL_S)  # the evaluation's share of the run: after the last training step
    with tracking.result_run(training, params) as res:
        res.log_metrics([("modes_covered", modes, 0), ("class_kl", kl, 0)])
    return res.run_id


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        use_store(mp, tmp_path_factory.mktemp("stacked") / "mlflow.db")
        for seed, modes, kl in ((0, 10, 5.5), (1, 30, 4.5), (2, 20, 5.0)):
            make_run("dcgan_paper", 1, seed, modes, kl)
        for seed, modes, kl in ((0, 700, 1.2), (1, 800, 1.0)):
            make_run("dcgan_paper", 2, seed, modes, kl)
        for seed, modes, kl in ((0, 900, 0.5), (1, 950, 0.3)):  # the same method with the weight average
            make_run("dcgan_paper", 2, seed, modes, kl, ema=0.999)
        make_run("mlp", 1, 0, 10, 0.01, dataset="mnist")  # not a Stacked MNIST run
        found = stacked.stacked_runs()
        yield found, stacked.table(found)


def test_only_stacked_result_runs_make_rows(runs):
    found, _ = runs
    assert len(found) == 7 and all(r["params"]["prepare.dataset"] == "stacked" for r in found)


def test_one_row_per_method_with_the_seeds_mean_and_spread(runs):
    _, text = runs
    rows = [line for line in text.splitlines() if "| this project |" in line]
    assert len(rows) == 3
    dcgan = next(r for r in rows if r.startswith("| DCGAN | this project |"))
    pac = next(r for r in rows if r.startswith("| PacDCGAN2 | this project |"))
    averaged = next(r for r in rows if r.startswith("| PacDCGAN2; train.ema 0.999 |"))
    assert "| 900 / 950 |" in averaged and "| 700 / 800 |" in pac  # never mixed into one row
    assert f"{statistics.mean([10, 30, 20]):.1f} ± {statistics.stdev([10, 30, 20]):.1f}" in dcgan
    assert "| 10 / 30 / 20 |" in dcgan and "| 0, 1, 2 |" in dcgan
    assert f"{statistics.mean([1.2, 1.0]):.3f} ± {statistics.stdev([1.2, 1.0]):.3f}" in pac
    assert "1000 steps × 64 (0.5 epochs of 128,000); 26,000 samples" in pac


def test_the_papers_rows_stand_beside_ours(runs):
    _, text = runs
    assert "| PacDCGAN2 | PacGAN | the papers' | – | 1000 | 0.06 |" in text
    assert "| DCGAN | VEEGAN, PacGAN | the papers' | – | 99 | 3.40 |" in text


def test_wall_times_come_from_the_runs_record(runs):
    found, _ = runs
    for r in found:
        train_s, eval_s = stacked.timings(r)
        assert train_s is not None and eval_s is not None and train_s >= 0 and eval_s >= EVAL_S
        assert (r["end_time"] - r["start_time"]) / 1000 == pytest.approx(train_s + eval_s)


def test_table_only_writes_the_table_to_its_results_page(runs, tmp_path, capsys):
    _, text = runs
    stacked.main(["--table-only", "--tracking-uri", os.environ["MLFLOW_TRACKING_URI"], "--work", str(tmp_path / "work"),
                  "--results", str(tmp_path / "pages")])
    page = (tmp_path / "pages/stacked.md").read_text()
    assert text.strip() in capsys.readouterr().out and text.strip() in page
    assert "- Command: `python bench/stacked.py --table-only --tracking-uri" in page
    assert "(stacked.md)" in (tmp_path / "pages/index.md").read_text()


def test_a_row_is_named_by_only_what_sets_it_apart():
    base = {"train.arch": "dcgan_paper", "train.loss": "bce", "train.pack": "2", "train.steps": "1000",
            "train.ema": "0.0", "train.r1": "0.0", "judge.width": "8"}
    runs = [dict(base, **{"train.seed": "0"}), dict(base, **{"train.seed": "1"}),
            dict(base, **{"train.seed": "0", "train.steps": "2000"}), dict(base, **{"train.seed": "0", "train.r1": "1.0"})]
    settings = list(dict.fromkeys(stacked.setting(p) for p in runs))
    assert len(settings) == 3  # seeds share a row; steps (the budget) and R1 do not
    shown = stacked.distinguishing(settings)
    assert shown == ["train.r1"]  # steps are in the budget column already
    assert stacked.label(runs[3], shown) == "PacDCGAN2; train.r1 1.0"
    assert stacked.label(runs[0], []) == "PacDCGAN2"
    # Beside the usual value of each such param, a row names only where it departs from it.
    common = stacked.usual(settings, shown)
    assert common == {"train.r1": "0.0"}
    assert [stacked.label(r, shown, common) for r in runs] == ["PacDCGAN2"] * 3 + ["PacDCGAN2; train.r1 1.0"]


def test_a_param_older_runs_lack_is_shown_only_where_it_departs():
    """Runs made before a param existed lack it (usual: absent); the run that sets it says so."""
    base = {"train.arch": "dcgan_paper", "train.loss": "bce", "train.pack": "2", "train.virtual_labels": "0"}
    runs = [dict(base, **{"train.g_steps": "2"}), dict(base, **{"train.ema": "0.999"}), dict(base),
            dict(base, **{"train.g_steps": "2", "train.virtual_labels": "10", "train.virtual_groups": "3"})]
    settings = [stacked.setting(p) for p in runs]
    shown = stacked.distinguishing(settings)
    common = stacked.usual(settings, shown)
    assert [stacked.label(r, shown, common) for r in runs] == [
        "PacDCGAN2, 2 G updates a step", "PacDCGAN2; train.ema 0.999", "PacDCGAN2",
        "PacDCGAN2, 2 G updates a step; train.virtual_groups 3, train.virtual_labels 10"]


def test_method_names_follow_the_papers():
    assert stacked.method({"train.arch": "dcgan_paper", "train.loss": "bce", "train.pack": "1"}) == "DCGAN"
    assert stacked.method({"train.arch": "dcgan_paper", "train.loss": "bce", "train.pack": "3"}) == "PacDCGAN3"
    assert stacked.method({"train.arch": "dcgan", "train.loss": "wgan-gp", "train.pack": "1"}) == "dcgan (wgan-gp)"
    assert stacked.method({"train.arch": "dcgan_paper", "train.loss": "bce", "train.pack": "2", "train.g_steps": "2"}) \
        == "PacDCGAN2, 2 G updates a step"


def test_the_floor_is_kept_per_seed_for_the_same_key_only(tmp_path):
    """A bench's second start reuses the floor's rows of the same data, judge and params,
    scores only the seeds it lacks, and never reuses rows made under another key."""
    path = tmp_path / "floor.json"
    assert stacked.cached_floor(path, "k", [0, 1]) == []
    rows = [{"seed": 0, "modes_covered": 1000}, {"seed": 1, "modes_covered": 999}]
    stacked.atomic.write_json(path, {"key": "k", "rows": rows})
    assert stacked.cached_floor(path, "k", [1, 2]) == [rows[1]]
    assert stacked.cached_floor(path, "other", [0, 1]) == []


def test_a_row_of_another_arch_names_what_sets_it_apart_not_its_arch_section():
    """An MLP row beside DCGAN rows: its arch's numbers (train.mlp.*) and the DCGAN's it
    lacks say nothing the method's name does not, and how the step compiles is no setting;
    a setting of its own (here the channels drawn apart) is named."""
    dcgan = {"train.arch": "dcgan_paper", "train.d_arch": "dcgan_paper", "train.loss": "bce", "train.pack": "2",
             "train.dcgan_paper.gf": "64", "train.jit_compile": "False", "train.ema": "0.0"}
    mlp = {"train.arch": "mlp", "train.d_arch": "mlp", "train.loss": "bce", "train.pack": "1",
           "train.mlp.g_units": "[128, 256]", "train.jit_compile": "True", "train.ema": "0.0",
           "train.channel_draw": "independent"}
    wide = dict(dcgan, **{"train.dcgan_paper.gf": "96"})
    runs = [dcgan, dict(dcgan), mlp, wide, dict(mlp, **{"train.d_arch": "dcgan_paper", "train.dcgan_paper.gf": "64"})]
    settings = [stacked.setting(r) for r in runs]
    shown = stacked.distinguishing(settings)
    common = stacked.usual(settings, shown)
    assert [stacked.label(r, shown, common) for r in runs] == [
        "PacDCGAN2", "PacDCGAN2", "MLP GAN; train.channel_draw independent",
        "PacDCGAN2; train.dcgan_paper.gf 96",
        "MLP GAN with DCGAN's D; train.channel_draw independent"]


def test_a_run_made_before_a_param_existed_shares_the_row_of_its_default():
    """A run that lacks train.virtual_groups ran as its default (one code) does: it shares
    that row, and no row is named by a param at its default."""
    base = {"train.arch": "dcgan_paper", "train.loss": "bce", "train.pack": "2", "train.virtual_labels": "0"}
    default = {"train.virtual_groups": "1", "train.channel_draw": "joint", "train.mlp.g_units": "[128]"}
    old, new = dict(base), dict(base, **{"train.virtual_groups": "1", "train.channel_draw": "joint"})
    apart = dict(base, **{"train.virtual_groups": "1", "train.channel_draw": "independent"})
    done = [stacked.completed(r, default) for r in (old, new, apart)]
    assert done[0] == done[1] and "train.mlp.g_units" not in done[0]  # a DCGAN run reads no MLP section
    settings = list(dict.fromkeys(stacked.setting(r) for r in done))
    assert len(settings) == 2
    shown = stacked.distinguishing(settings)
    assert [stacked.label(r, shown, stacked.usual(settings, shown)) for r in done] == [
        "PacDCGAN2", "PacDCGAN2", "PacDCGAN2; train.channel_draw independent"]
