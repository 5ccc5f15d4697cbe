"""The comparison report on a real sqlite MLflow store, filled through the
tracking API as the pipeline fills it: two trainings, three results (one
joins its training run, one reuses a training in a run of its own) and a
training that never got a result."""
from __future__ import annotations

import contextlib
import io
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from pipeline import compare, tracking
from pipeline.errors import StageError

STEPS = 30
TRAIN = {"train.arch": "mlp", "train.seed": "1", "train.steps": str(STEPS)}


def grid_png(path: Path, value: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((224, 224), value, np.uint8)).save(path)
    return path


def train(tmp: Path, loss: str, grids: dict[int, int], offset: float) -> dict:
    params = {**TRAIN, "train.loss": loss}
    with tracking.training_run(params) as run:
        run.log_metrics([(k, offset + s / STEPS + (k == "g_loss"), s) for s in range(1, STEPS + 1)
                         for k in ("d_loss", "g_loss")])
        for step, value in grids.items():
            run.log_artifact(grid_png(tmp / loss / f"step_{step:06d}.png", value), "samples")
    return {"run_id": run.run_id, "params": params}


def result(training: dict, kl_max: float, metrics: dict) -> tracking.Run:
    params = {**training["params"], "evaluate.kl_max": kl_max, "prepare.limit": 1000}
    with tracking.result_run(training, params) as res:
        res.log_metrics([(k, v, 0) for k, v in metrics.items()])
    return res


def scores(fcd, covered, passed, collapse):
    return {"fcd": fcd, "classifier_score_ratio": 0.987654, "precision": 0.5, "recall": 0.25,
            "modes_covered": covered, "modes_expected": 10, "class_kl": 0.0123456, "diversity_ratio": 1.1,
            "copying_z": -2.0, "quality_gate_passed": passed, "mode_collapse": collapse, "memorization": 0}


def use_store(mp: pytest.MonkeyPatch, db: Path) -> str:
    uri = f"sqlite:///{db}"
    mp.setenv("MLFLOW_TRACKING_URI", uri)
    for var in ("DVC_EXP_NAME", "DVC_ROOT"):  # run names and joining depend on them
        mp.delenv(var, raising=False)
    mp.setattr(tracking, "_CLIENT", None)
    return uri


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compare")
    with pytest.MonkeyPatch.context() as mp:
        uri = use_store(mp, tmp / "mlflow.db")
        bce = train(tmp, "bce", {10: 50, 30: 200}, offset=0.0)
        hinge = train(tmp, "hinge", {}, offset=1.0)
        train(tmp, "wgan", {30: 100}, offset=2.0)  # no result: never a row
        a = result(bce, 0.1, scores(12.3456789, 10, 1, 0))
        b = result(hinge, 0.1, scores(7.0, 9, 0, 1))
        c = result(bce, 0.2, scores(3.0, 10, 1, 0))  # reuses bce's training: a run of its own
        out = tmp / "all"
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            compare.main(["--out", str(out)])
        yield SimpleNamespace(tmp=tmp, uri=uri, runs=[a, b, c], out=out, printed=printed.getvalue())


def parse_table(md: str) -> tuple[list[str], list[dict]]:
    rows = [line[2:-2].split(" | ") for line in md.splitlines() if line.startswith("| ")]
    assert all(len(r) == len(rows[0]) for r in rows), rows
    return rows[0], [dict(zip(rows[0], r)) for r in rows[2:]]


def test_one_row_per_finished_result_run_oldest_first_with_its_numbers(store):
    head, rows = parse_table((store.out / "report.md").read_text())
    a, b, c = store.runs
    assert a.run_id != c.run_id and a.name != c.name
    assert [r["run"] for r in rows] == [a.name, b.name, c.name]
    assert [r["fcd"] for r in rows] == ["12.35", "7", "3"]
    assert rows[0]["classifier_score_ratio"] == "0.9877" and rows[0]["class_kl"] == "0.01235"
    assert [r["modes"] for r in rows] == ["10/10", "9/10", "10/10"]
    assert [r["quality_gate_passed"] for r in rows] == ["yes", "no", "yes"]
    assert [r["mode_collapse"] for r in rows] == ["no", "yes", "no"]
    assert {r["memorization"] for r in rows} == {"no"}


def test_only_the_params_that_differ_are_columns(store):
    head, rows = parse_table((store.out / "report.md").read_text())
    assert [h for h in head if "." in h] == ["evaluate.kl_max", "train.loss"]
    assert [r["train.loss"] for r in rows] == ["bce", "hinge", "bce"]
    assert [r["evaluate.kl_max"] for r in rows] == ["0.1", "0.1", "0.2"]


def test_report_links_both_figures_and_lists_the_run_ids(store):
    md = (store.out / "report.md").read_text()
    assert "](losses.png)" in md and "](samples.png)" in md
    ids_line = next(line for line in md.splitlines() if line.startswith("Run ids:"))
    assert [s.strip(" `") for s in ids_line.removeprefix("Run ids:").split(",")] == [r.run_id for r in store.runs]


def test_runs_selects_and_orders_and_the_columns_follow(store, monkeypatch):
    a, _, c = store.runs
    out = store.tmp / "two"
    compare.main(["--runs", c.name, a.run_id, "--out", str(out)])
    head, rows = parse_table((out / "report.md").read_text())
    assert [r["run"] for r in rows] == [c.name, a.name]
    # Both are bce: train.loss is the same in this selection.
    assert [h for h in head if "." in h] == ["evaluate.kl_max"]
    three, two = (Image.open(d / "samples.png") for d in (store.out, out))
    assert three.width > two.width and three.height == two.height


def test_unknown_run_is_a_stage_error_naming_it(store):
    out = store.tmp / "unknown"
    with pytest.raises(StageError, match="'no-such-run'"):
        compare.main(["--runs", store.runs[0].name, "no-such-run", "--out", str(out)])
    assert not out.exists()


def test_no_result_runs_is_a_stage_error(tmp_path, monkeypatch):
    use_store(monkeypatch, tmp_path / "empty.db")
    with pytest.raises(StageError, match="no FINISHED result runs"):
        compare.main(["--out", str(tmp_path / "out")])


def near(img: np.ndarray, rgb) -> int:
    return int((np.abs(img[..., :3].astype(int) - rgb).max(-1) < 40).sum())


def test_loss_figure_has_two_panels_and_a_line_per_run(store):
    img = Image.open(store.out / "losses.png")
    assert img.width >= 800 and img.width > 2 * img.height * 0.9
    px = np.asarray(img.convert("RGB"))
    # matplotlib's first three line colours. The third run's curves are the first's (copied from the
    # training it reuses) drawn over them, so the first shows in its legend entry only: a legend
    # entry exists only for a line drawn.
    for rgb in ((31, 119, 180), (255, 127, 14), (44, 160, 44)):
        assert near(px, rgb) > 40, rgb


def test_long_curves_are_smoothed_and_the_titles_say_so():
    curve = [(s, float(s % 2)) for s in range(1, 501)]
    fig = compare.loss_figure([("x", {"d_loss": curve, "g_loss": curve}), ("y", {"d_loss": [], "g_loss": []})])
    left, right = fig.axes
    assert left.get_title() == "d_loss per step (trailing mean over 10 steps)"
    assert right.get_title().startswith("g_loss")
    assert [line.get_label() for line in left.lines] == ["x"]
    assert np.ptp(left.lines[0].get_ydata()[10:]) < 0.2  # raw, it swings 0..1


def test_samples_show_each_runs_final_grid_or_a_blank_tile(store):
    img = np.asarray(Image.open(store.out / "samples.png").convert("L"))
    tile = compare.TILE + compare.GAP
    centres = [img[compare.GAP + 100:compare.GAP + 124, compare.GAP + i * tile + 10:compare.GAP + i * tile + 40]
               for i in range(3)]
    assert img.shape[1] == compare.GAP + 3 * tile
    assert (centres[0] == 200).all()  # step 30's grid, not step 10's (50)
    assert (centres[1] == 225).all()  # hinge logged no grid
    assert (centres[2] == 200).all()  # copied from the training it reuses
    labels = img[compare.GAP + compare.TILE:, :compare.GAP + tile]
    assert (labels < 128).any()


def test_report_is_logged_to_its_own_mlflow_run(store, tmp_path):
    from mlflow.tracking import MlflowClient

    c = MlflowClient(store.uri)
    exp = c.get_experiment_by_name(tracking.REPORTS_EXPERIMENT)
    ids = ",".join(r.run_id for r in store.runs)
    runs = c.search_runs([exp.experiment_id], filter_string=f"tags.compared_run_ids = '{ids}'")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.run_name == "compare-3-runs" and run.info.status == "FINISHED"
    assert {a.path for a in c.list_artifacts(run.info.run_id)} >= {"report.md", "losses.png", "samples.png"}
    logged = Path(c.download_artifacts(run.info.run_id, "report.md", str(tmp_path)))
    assert logged.read_text() == (store.out / "report.md").read_text()
    assert str(store.out / "report.md") in store.printed and "compare-3-runs" in store.printed


def test_final_grid_is_the_highest_step_by_number():
    paths = ["samples/progress.gif", "samples/step_999999.png", "samples/step_1000000.png", "samples/step_000010.png"]
    assert compare.final_grid(paths) == "samples/step_1000000.png"
    assert compare.final_grid(["samples/progress.gif"]) is None


def test_trailing_mean_looks_back_only():
    assert compare.trailing_mean(np.array([1.0, 2, 3, 4]), 2).tolist() == [1, 1.5, 2.5, 3.5]
    assert compare.trailing_mean(np.array([1.0, 5]), 1).tolist() == [1, 5]


def test_table_cells_formats_and_missing_values():
    runs = [{"run_id": "1", "name": "x", "metrics": {"fcd": 0.000123456}, "params": {"a": "p|q", "b": "1"}},
            {"run_id": "2", "name": "y", "metrics": {}, "params": {"b": "1", "c": "2"}}]
    assert compare.differing_params(runs) == ["a", "c"]
    head, rows = parse_table(compare.table(runs))
    assert rows[0]["fcd"] == "0.0001235" and rows[1]["fcd"] == "–" and rows[1]["modes"] == "–"
    assert rows[0]["a"] == "p\\|q" and rows[1]["a"] == "–" and rows[1]["quality_gate_passed"] == "–"
