"""Quality against training time: each candidate recipe trained once per seed, scored by
the evaluate stage's own metrics at several points on the way, each curve an MLflow run.

    python bench/curves.py                                   # params.yaml's default
    python bench/curves.py --recipe recipes/conv.yaml --recipe recipes/dcgan.yaml --every 1000
    python bench/curves.py --set train.steps=3000 --every 500 --seeds 0 1 2
    python bench/curves.py --recipe recipes/dcgan_paper_pac2.yaml --recipe recipes/stacked_best.yaml \\
        --set train.steps=1000 --every 250 --seeds 0 1 2 --scores classes
    python bench/curves.py --table-only --work /tmp/curves   # the page again from the runs there

Each candidate (params.yaml, then a recipe's overrides, then `--set`'s) trains once
per seed (`--seeds`, as train.seed), in a process of its own with the train stage's
model, step and data order. Every `--every` steps, and at the end, the generator as
the stage would save it at that step (the weight average with standing statistics)
draws `evaluate.num_samples` images that the evaluation scores against the held-out
images with the judge: every metric of `pipeline.evaluate.score` (`--scores all`), or
only those of the judge's class histogram, modes covered and class KL (`--scores
classes`, which skips the nearest-neighbour and feature figures). Training time excludes
the scoring. Each (candidate, seed) is one MLflow run in the experiment
`mnist-gan-curves` (default store: `<work>/mlflow.db`; `--tracking-uri`): its params,
and per scored step `train_s` and the scores, with the sample grids as artifacts. A run
that FINISHED in the store under the same params, seed, `--every`, `--scores`, data and
judge is kept and not trained again, so a stopped bench picks up at the curve it was
on, and a candidate or a seed is added without training the others anew.

The table and the figure are made from the store's FINISHED curve runs of this
invocation's candidates and seeds (`--table-only`: every one in the store), a row per
candidate and step: the seeds' median training seconds and each score's mean ± std over
the seeds; the figure draws modes covered and class KL against training minutes, the
seeds' mean with their range shaded (docs/training.md#recipes-against-training-time).
Both go to docs/results/curves.md too (`--results DIR`, `--no-results`).

The judge and the data are `--judge`/`--data` (default: prepared and trained
here, once, in the work folder).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench import results  # noqa: E402
from bench.seeds import cpu_model, stage  # noqa: E402
from ops.recipe import overrides as recipe_overrides  # noqa: E402
from pipeline import atomic, errors, params  # noqa: E402

# What each --scores choice records at a step, besides the step and its training seconds.
SCORES = {
    "all": ("fcd", "classifier_score_ratio", "precision", "recall", "modes_covered", "class_kl",
            "quality_gate_passed"),
    "classes": ("modes_covered", "class_kl"),
}
PLOTTED = ("modes_covered", "class_kl")
TAG_CANDIDATE, TAG_SEED, TAG_KEY, TAG_SETTING = "curve.candidate", "curve.seed", "curve.key", "curve.setting"
SECTIONS = ("prepare", "judge", "train", "evaluate")


def scorer(scores: str, ds, ep, judge) -> Callable:
    """generated images -> {metric: value}: the evaluation's every metric, or its class figures
    alone (the held-out images' class probabilities taken once)."""
    from pipeline import classifier, evaluate

    real, labels = evaluate.real_subset(ds.x_test, ep.num_samples, ep.seed, ds.y_test)
    if scores == "classes":
        p_real = classifier.embed(judge, real)[1]
        return lambda gen: evaluate.class_figures(classifier.embed(judge, gen)[1], p_real, labels, ep)
    return lambda gen: evaluate.score(gen, real, labels, ds.x_train, judge, ep).metrics


def curve(params_path: Path, data: Path, judge_path: Path, every: int, out: Path,
          record: Callable[[dict], None], scores: str = "all") -> None:
    """Train one candidate, scoring it every `every` steps and at the end: `record` gets a row
    per point ({"step", "train_s", *SCORES[scores]}); sample grids and the last generator go to `out`."""
    import keras

    from pipeline import classifier, data as data_mod, evaluate, images, train
    from pipeline.gan import float32_copy, standing_statistics

    p = params.load("train", params_path)
    ep = params.load("evaluate", params_path)
    # The digits or Stacked MNIST drawn from them (prepare.dataset), as train and evaluate take them.
    ds = data_mod.training_set(data_mod.load_prepared(data), params.load("prepare", params_path))
    metrics_of = scorer(scores, ds, ep, classifier.load(judge_path))
    gan = train.build(p, channels=data_mod.channels_of(ds))
    clock = {"scoring": 0.0, "start": time.perf_counter()}

    def score(step: int) -> None:
        t0 = time.perf_counter()
        sampler = standing_statistics(float32_copy(gan.sampler), p.seed, p.standing_samples)
        gen = evaluate.sample(sampler, ep.num_samples, ep.seed)
        m = metrics_of(gen)
        images.save_png(images.grid(gen[:64], cols=8), out / f"samples_{step:06d}.png", scale=2)
        if step == p.steps:
            sampler.save(out / "generator.keras")
        trained = t0 - clock["start"] - clock["scoring"]
        row = {"step": step, "train_s": round(trained, 1), **{k: m[k] for k in SCORES[scores]}}
        record(row)
        print("  " + ", ".join(f"{k}={v:.4g}" for k, v in row.items()), flush=True)
        clock["scoring"] += time.perf_counter() - t0

    class Scorer(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            step = int(self.model.step.numpy())
            if step % every == 0 and step < p.steps:
                score(step)

    train.fit(gan, p, ds.x_train, verbose=0, extra_callbacks=[Scorer()])
    score(p.steps)


def tracked_curve(params_path: Path, data: Path, judge_path: Path, every: int, out: Path, scores: str,
                  name: str, tags: dict) -> None:
    """`curve` inside its MLflow run: every section's params, a metric point per score and step,
    the sample grids; FINISHED at the last step, FAILED if it stops before."""
    from pipeline import tracking

    flat = {k: v for s in SECTIONS for k, v in params.flat(s, params.load(s, params_path)).items()}
    flat.update({"curve.every": every, "curve.scores": scores})
    with tracking.curve_run(name, flat, tags) as run:
        def record(row: dict) -> None:
            run.log_metrics([(k, v, row["step"]) for k, v in row.items() if k != "step"])

        curve(params_path, data, judge_path, every, out, record, scores)
        for png in sorted(out.glob("samples_*.png")):
            run.log_artifact(png, "samples")


def digest(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def curve_tags(name: str, doc: dict, every: int, scores: str, data: Path, judge: Path) -> dict:
    """What a curve run is known by: its candidate and seed, `curve.key` everything its
    numbers depend on (params, interval, scores, data, judge), `curve.setting` the same
    but the seed (the curves of one table row)."""
    files = [hashlib.sha256(f.read_bytes()).hexdigest() for f in (data, judge)]
    seed = doc["train"]["seed"]
    unseeded = {**doc, "train": {k: v for k, v in doc["train"].items() if k != "seed"}}
    return {TAG_CANDIDATE: name, TAG_SEED: seed, TAG_KEY: digest(doc, every, scores, files),
            TAG_SETTING: digest(unseeded, every, scores, files)}


def points(runs: list[dict]) -> list[dict]:
    """A row per run and scored step: candidate, setting, seed, step, train_s and the scores."""
    from pipeline import tracking

    out = []
    for r in runs:
        keys = SCORES[r["params"].get("curve.scores", "all")]
        history = {k: dict(tracking.metric_history(r["run_id"], k)) for k in ("train_s", *keys)}
        for step, seconds in sorted(history["train_s"].items()):
            out.append({"candidate": r["tags"][TAG_CANDIDATE], "setting": r["tags"][TAG_SETTING],
                        "seed": int(r["tags"][TAG_SEED]), "step": step, "train_s": seconds,
                        **{k: history[k][step] for k in keys if step in history[k]}})
    return out


def labels(rows: list[dict]) -> dict[tuple[str, str], str]:
    """(candidate, setting) -> its name in the table: the candidate, with the setting's digest
    where one candidate has curves of several settings."""
    groups = list(dict.fromkeys((r["candidate"], r["setting"]) for r in rows))
    names = [c for c, _ in groups]
    return {(c, s): c if names.count(c) == 1 else f"{c} ({s[:6]})" for c, s in groups}


def aggregate(rows: list[dict]) -> list[dict]:
    """A row per (candidate, setting) and step over its seeds: the median training seconds,
    each score's mean, std, min and max."""
    named = labels(rows)
    out = []
    for (candidate, setting), name in named.items():
        mine = [r for r in rows if (r["candidate"], r["setting"]) == (candidate, setting)]
        for step in sorted({r["step"] for r in mine}):
            at = [r for r in mine if r["step"] == step]
            row = {"candidate": name, "step": step, "seeds": sorted(r["seed"] for r in at),
                   "train_s": statistics.median(r["train_s"] for r in at)}
            for key in [k for k in at[0] if k not in ("candidate", "setting", "seed", "step", "train_s")]:
                xs = [r[key] for r in at if key in r]
                row[key] = {"mean": statistics.fmean(xs), "std": statistics.pstdev(xs), "min": min(xs),
                            "max": max(xs)}
            out.append(row)
    return out


def number(x: float) -> str:
    """Whole numbers from 100 on (modes, FCD), three figures below: no exponents."""
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:.3g}"


def table(agg: list[dict]) -> str:
    keys = list(dict.fromkeys(k for r in agg for k in r if k not in ("candidate", "step", "seeds", "train_s")))
    lines = ["| candidate | step | seeds | train s (median) | " + " | ".join(keys) + " |",
             "|---|---:|---|---:|" + "---:|" * len(keys)]
    for r in agg:
        cells = [f"{number(r[k]['mean'])} ± {number(r[k]['std'])}" if k in r else "–" for k in keys]
        lines.append(f"| {r['candidate']} | {r['step']} | {' '.join(map(str, r['seeds']))} | {r['train_s']:.0f} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(agg: list[dict], path: Path) -> None:
    """Modes covered and class KL against training minutes, a line per candidate (the seeds'
    mean, their range shaded): written atomically as SVG to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.hashsalt"] = "curves"  # fixed element ids: the same rows give the same file
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name in dict.fromkeys(r["candidate"] for r in agg):
        rows = [r for r in agg if r["candidate"] == name and all(k in r for k in PLOTTED)]
        minutes = [r["train_s"] / 60 for r in rows]
        seeds = max((len(r["seeds"]) for r in rows), default=0)
        for ax, key in zip(axes, PLOTTED):
            line, = ax.plot(minutes, [r[key]["mean"] for r in rows], marker="o",
                            label=f"{name} ({seeds} seed{'s' * (seeds != 1)})")
            if seeds > 1:
                ax.fill_between(minutes, [r[key]["min"] for r in rows], [r[key]["max"] for r in rows],
                                color=line.get_color(), alpha=0.2, linewidth=0)
    axes[0].set(xlabel="training minutes (scoring excluded)", ylabel="modes covered")
    axes[1].set(xlabel="training minutes (scoring excluded)", ylabel="class KL (generated || uniform)", yscale="log")
    axes[0].legend(fontsize="small")
    fig.tight_layout()
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="svg", metadata={"Date": None})  # nor a date
    plt.close(fig)


def run_curves(args, work: Path, env: dict, say: results.Printout) -> set[str]:
    """Every candidate's curve on every seed, a FINISHED run each (kept where one is in the
    store); returns their curve.key tags."""
    from pipeline import tracking

    base = yaml.safe_load(args.params.read_text())
    data, judge = args.data or work / "mnist.npz", args.judge or work / "judge.keras"
    (work / "params.yaml").write_text(yaml.safe_dump(base, sort_keys=False))
    if not data.exists():
        stage("prepare", "--params", str(work / "params.yaml"), "--out", str(data), "--report",
              str(work / "data.json"), env=env)
    if not judge.exists():
        stage("judge", "--params", str(work / "params.yaml"), "--data", str(data), "--model", str(judge),
              "--report", str(work / "judge.json"), env=env)
    candidates = [(r.stem, recipe_overrides(r)) for r in args.recipe] or [("default", [])]
    keys, finished = set(), {r["tags"].get(TAG_KEY) for r in tracking.curve_runs()}
    for seed in args.seeds or [None]:  # seed by seed: a stopped bench has every candidate on the first seeds
        for name, sets in candidates:
            seeded = args.set + ([] if seed is None else [f"train.seed={seed}"])
            doc = params.with_sets(base, sets + seeded)
            tags = curve_tags(name, doc, args.every, args.scores, data, judge)
            keys.add(tags[TAG_KEY])
            run = f"{name}-seed{doc['train']['seed']}"
            title = f"{run}: {' '.join(sets + args.set) or 'params.yaml'}"
            if tags[TAG_KEY] in finished:
                say(f"{title}; scored before, kept")
                continue
            say(title)
            d = work / run
            d.mkdir(exist_ok=True)
            for png in d.glob("samples_*.png"):  # a stopped curve's, under another key: not this run's artifacts
                png.unlink()
            (d / "params.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
            (d / "tags.json").write_text(json.dumps({"name": run, "tags": tags}))
            proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--one", str(d), "--every",
                                   str(args.every), "--scores", args.scores, "--data", str(data), "--judge",
                                   str(judge)], env=env)
            if proc.returncode:
                raise SystemExit(f"{run}: exited {proc.returncode}")
    return keys


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    ap.add_argument("--recipe", type=Path, action="append", default=[],
                    help="a candidate: recipes/<name>.yaml (repeat; none: params.yaml's default)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="for every candidate")
    ap.add_argument("--every", type=int, default=1000, help="score every N steps (and at the end)")
    ap.add_argument("--seeds", type=int, nargs="+", help="train.seed values, a curve each (default: params')")
    ap.add_argument("--scores", choices=sorted(SCORES), default="all",
                    help="all: every metric of the evaluation; classes: modes covered and class KL alone")
    ap.add_argument("--data", type=Path)
    ap.add_argument("--judge", type=Path)
    ap.add_argument("--work", type=Path)
    ap.add_argument("--tracking-uri", help="the MLflow store (default: <work>/mlflow.db)")
    ap.add_argument("--table-only", action="store_true", help="the table from the store's curve runs; train nothing")
    ap.add_argument("--one", type=Path, help=argparse.SUPPRESS)
    results.add_arguments(ap)
    args = ap.parse_args(argv)

    if args.one:
        run = json.loads((args.one / "tags.json").read_text())
        tracked_curve(args.one / "params.yaml", args.data, args.judge, args.every, args.one, args.scores,
                      run["name"], run["tags"])
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="curves-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ["MLFLOW_TRACKING_URI"] = args.tracking_uri or f"sqlite:///{work.resolve() / 'mlflow.db'}"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}
    from pipeline import tracking

    say = results.Printout()
    t0 = time.perf_counter()
    keys = None if args.table_only else run_curves(args, work, env, say)
    runs = [r for r in tracking.curve_runs() if keys is None or r["tags"].get(TAG_KEY) in keys]
    if not runs:
        raise SystemExit(f"no FINISHED curve runs in {tracking.redact(tracking.tracking_uri())}")
    if keys is not None:
        print(f"\ncurves made on {cpu_model()} in {time.perf_counter() - t0:.0f} s; work: {work}")
    sets = "" if args.table_only else f"; for every candidate: {' '.join(args.set) or 'nothing'}"
    say(f"\n{len(runs)} FINISHED curve runs in the MLflow store{sets}\n")
    agg = aggregate(points(runs))
    say(table(agg))
    if args.results is not None:
        plot(agg, args.results / "curves.svg")
        figure = "\n![modes covered and class KL against training minutes](curves.svg)\n"
        results.publish("curves", "Quality against training time", say.markdown() + figure, argv=argv,
                        out=args.results)


if __name__ == "__main__":
    # SIGTERM unwinds as Ctrl-C does: a curve's run is marked FAILED, not left RUNNING.
    errors.run_stage(main)
