"""The comparison report over MLflow result runs: one table of the headline
metrics, the verdicts and the params that differ, the loss curves overlaid
and each run's final sample grid side by side.

    python -m pipeline.compare [--runs NAME_OR_ID ...] [--out reports/compare]

Without `--runs` it compares every FINISHED result run of the experiment
`mnist-gan`, oldest first; with it, the runs named (run name or id), in that
order. Writes `report.md`, `losses.png` and `samples.png` under `--out` and
logs that folder to a run of its own in the experiment `mnist-gan-reports`,
tagged `compared_run_ids`. MLflow is reached through pipeline.tracking only.
"""
from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path

import numpy as np
# The Agg canvas on a bare Figure: no pyplot, so no global backend or figure state.
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageDraw

from pipeline import atomic, tracking
from pipeline.errors import StageError, run_stage

HEADLINE = ("fcd", "classifier_score_ratio", "precision", "recall", "modes", "class_kl", "diversity_ratio",
            "copying_z")
VERDICTS = ("quality_gate_passed", "mode_collapse", "memorization")
CURVES = ("d_loss", "g_loss")
GRID = re.compile(r"(?:^|/)step_(\d+)\.png$")
TILE = 224          # a grid as train writes it (4x4 digits at 2x): the size of a blank tile
LABEL_H, GAP = 20, 8
SMOOTH_POINTS = 50  # about this many windows per curve: raw GAN losses are mostly step-to-step noise
MISSING = "–"


def fmt(x: float | None) -> str:
    """Four significant digits; a dash for a metric the run never logged."""
    return MISSING if x is None else f"{x:.4g}"


def yes_no(x: float | None) -> str:
    return MISSING if x is None else ("yes" if x >= 0.5 else "no")


def modes(m: dict) -> str:
    if m.get("modes_covered") is None or m.get("modes_expected") is None:
        return MISSING
    return f"{int(m['modes_covered'])}/{int(m['modes_expected'])}"


def differing_params(runs: list[dict]) -> list[str]:
    """The params whose value is not the same in every run (a param a run lacks counts as differing)."""
    keys = sorted({k for r in runs for k in r["params"]})
    return [k for k in keys if len({r["params"].get(k) for r in runs}) > 1]


def _cell(x) -> str:
    # A param value holding "|" or a newline would otherwise split or end the row.
    return str(x).replace("|", "\\|").replace("\n", " ")


def table(runs: list[dict]) -> str:
    """The Markdown table: one row per run, in the order given."""
    varying = differing_params(runs)
    head = ["run", *HEADLINE, *VERDICTS, *varying]
    rows = [head, ["---", *["---:"] * len(HEADLINE), *["---"] * (len(VERDICTS) + len(varying))]]
    for r in runs:
        m = r["metrics"]
        rows.append([r["name"] or r["run_id"],
                     *(modes(m) if k == "modes" else fmt(m.get(k)) for k in HEADLINE),
                     *(yes_no(m.get(k)) for k in VERDICTS),
                     *(r["params"].get(k, MISSING) for k in varying)])
    return "".join("| " + " | ".join(_cell(c) for c in row) + " |\n" for row in rows)


def report_markdown(runs: list[dict]) -> str:
    return "\n".join([
        f"# Comparison of {len(runs)} result runs", "",
        "Headline metrics and verdicts from `evaluate`; `modes` is covered/expected. "
        "Params are shown only where they differ between these runs.", "",
        table(runs),
        "![d_loss and g_loss per step](losses.png)", "",
        "![final sample grid of each run](samples.png)", "",
        "Run ids: " + ", ".join(f"`{r['run_id']}`" for r in runs), ""])


def trailing_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Mean of each point and the window-1 before it (fewer at the start): no look-ahead, no step lost."""
    c = np.cumsum(np.insert(np.asarray(values, float), 0, 0.0))
    hi = np.arange(1, len(values) + 1)
    lo = np.maximum(hi - window, 0)
    return (c[hi] - c[lo]) / (hi - lo)


def loss_figure(curves: list[tuple[str, dict[str, list[tuple[int, float]]]]]) -> Figure:
    """d_loss and g_loss per step in two panels, one line per (label, {key: [(step, value)]})."""
    longest = max((len(h) for _, c in curves for h in c.values()), default=0)
    window = max(1, longest // SMOOTH_POINTS)
    fig = Figure(figsize=(12, 4.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    for ax, key in zip(fig.subplots(1, 2), CURVES):
        for label, c in curves:
            if c.get(key):
                steps, vals = np.asarray(c[key], float).T
                ax.plot(steps, trailing_mean(vals, window), label=label, lw=1.2)
        how = f"trailing mean over {window} steps" if window > 1 else "raw"
        ax.set(title=f"{key} per step ({how})", xlabel="step", ylabel=key)
        if ax.lines:
            ax.legend(fontsize="small")
        else:
            ax.text(0.5, 0.5, "no curve logged", ha="center", va="center", transform=ax.transAxes)
    return fig


def _fit(draw: ImageDraw.ImageDraw, text: str, width: int) -> str:
    if draw.textlength(text) <= width:
        return text
    while text and draw.textlength(text + "..") > width:
        text = text[:-1]
    return text + ".."


def _centered(draw: ImageDraw.ImageDraw, text: str, cx: float, cy: float) -> None:
    # By the text's bounding box: anchors need a FreeType font, the default may be a bitmap one.
    left, top, right, bottom = draw.textbbox((0, 0), text)
    draw.text((cx - (left + right) / 2, cy - (top + bottom) / 2), text, fill=0)


def samples_figure(tiles: list[tuple[str, Image.Image | None]]) -> Image.Image:
    """Each (label, grid) side by side with the label underneath; a None grid is a blank tile."""
    side = max([TILE, *(max(im.size) for _, im in tiles if im is not None)])
    canvas = Image.new("L", (GAP + len(tiles) * (side + GAP), 2 * GAP + side + LABEL_H), 255)
    draw = ImageDraw.Draw(canvas)
    for i, (label, im) in enumerate(tiles):
        x = GAP + i * (side + GAP)
        if im is None:
            draw.rectangle((x, GAP, x + side - 1, GAP + side - 1), fill=225)
            _centered(draw, "no samples", x + side / 2, GAP + side / 2)
        else:
            im = im.convert("L")
            canvas.paste(im, (x + (side - im.width) // 2, GAP + (side - im.height) // 2))
        _centered(draw, _fit(draw, label, side), x + side / 2, GAP + side + LABEL_H / 2)
    return canvas


def final_grid(paths: list[str]) -> str | None:
    """The highest-step `step_*.png` among artifact paths, by step number (names sort wrong past 6 digits)."""
    steps = {int(m.group(1)): p for p in paths if (m := GRID.search(p))}
    return steps[max(steps)] if steps else None


def fetch_grid(run_id: str, tmp: Path) -> Image.Image | None:
    path = final_grid(tracking.list_artifacts(run_id, "samples"))
    if path is None:
        return None
    tmp.mkdir(parents=True, exist_ok=True)
    with Image.open(tracking.download(run_id, path, tmp)) as im:
        return im.convert("L")  # loaded now: the download is gone once the caller's tmp is


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", nargs="+", metavar="NAME_OR_ID",
                    help="result runs to compare, in this order (default: every FINISHED one, oldest first)")
    ap.add_argument("--out", default="reports/compare", help="folder for report.md, losses.png, samples.png")
    args = ap.parse_args(argv)

    runs = tracking.result_runs(args.runs)
    if not runs:
        raise StageError(f"no FINISHED result runs in experiment {tracking.EXPERIMENT} at "
                         f"{tracking.redact(tracking.tracking_uri())}: run the pipeline first")
    out = Path(args.out)
    curves = [(r["name"], {k: tracking.metric_history(r["run_id"], k) for k in CURVES}) for r in runs]
    with tempfile.TemporaryDirectory() as tmp:
        tiles = [(r["name"], fetch_grid(r["run_id"], Path(tmp) / r["run_id"])) for r in runs]

    with atomic.atomic_path(out / "losses.png") as path:
        loss_figure(curves).savefig(path, format="png")
    with atomic.atomic_path(out / "samples.png") as path:
        samples_figure(tiles).save(path, format="PNG")
    atomic.write_text(out / "report.md", report_markdown(runs))

    ids = ",".join(r["run_id"] for r in runs)
    # A tag holds at most a few thousand characters; report.md lists every id anyway.
    tags = {"compared_runs": len(runs), "compared_run_ids": ids if len(ids) <= 4000 else None}
    with tracking.report_run(name=f"compare-{len(runs)}-runs", tags=tags) as run:
        run.log_artifacts(out)
    print(f"compare: {out / 'report.md'}")
    print(f"compare: MLflow run {run.name} ({run.run_id}) in experiment {tracking.REPORTS_EXPERIMENT}")


if __name__ == "__main__":
    run_stage(main)
