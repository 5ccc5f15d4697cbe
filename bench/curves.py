"""Quality against training time: each candidate recipe trained once, scored by
the evaluate stage's own metrics at several points on the way.

    python bench/curves.py                                   # params.yaml's default
    python bench/curves.py --recipe recipes/conv.yaml --recipe recipes/dcgan.yaml --every 1000
    python bench/curves.py --set train.steps=3000 --every 500 --seed 1
    python bench/curves.py --recipe recipes/dcgan_paper_stacked.yaml --recipe recipes/dcgan_paper_pac2.yaml

Each candidate (params.yaml, then a recipe's overrides, then `--set`'s) trains
in a process of its own with the train stage's model, step and data order.
Every `--every` steps, and at the end, the generator as the stage would save
it at that step (the weight average with standing statistics) draws
`evaluate.num_samples` images that `pipeline.evaluate.score` scores against
the held-out images with the judge; the first 64 go to
`<work>/<candidate>/samples_<step>.png`, and the last generator to
`<work>/<candidate>/generator.keras`. Training time excludes the scoring. The
rows are one Markdown table: `fcd`, classifier-score ratio, precision, recall,
modes and class KL against training seconds (docs/training.md#recipes-against-training-time),
so that candidates compare at equal wall time on the same machine; they go to
docs/results/curves.md too (`--results DIR`, `--no-results`).

The judge and the data are `--judge`/`--data` (default: prepared and trained
here, once, in the work folder). A candidate whose curve reached its last step
in the same work folder, with the same params, `--every`, data and judge, is
kept and not trained again, so a stopped bench picks up at the candidate it was
on, and a candidate can be added to the page without training the others anew.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench import results  # noqa: E402
from bench.seeds import cpu_model, stage  # noqa: E402
from ops.recipe import overrides as recipe_overrides  # noqa: E402
from pipeline import atomic, params  # noqa: E402

COLUMNS = ("step", "train_s", "fcd", "classifier_score_ratio", "precision", "recall", "modes_covered",
           "class_kl", "quality_gate_passed")


def curve(params_path: Path, data: Path, judge_path: Path, every: int, out: Path) -> None:
    """Train one candidate, scoring it every `every` steps; a JSON line per point to `out`."""
    import keras

    from pipeline import classifier, data as data_mod, evaluate, images, train
    from pipeline.gan import float32_copy, standing_statistics

    p = params.load("train", params_path)
    ep = params.load("evaluate", params_path)
    # The digits or Stacked MNIST drawn from them (prepare.dataset), as train and evaluate take them.
    ds = data_mod.training_set(data_mod.load_prepared(data), params.load("prepare", params_path))
    judge = classifier.load(judge_path)
    real, labels = evaluate.real_subset(ds.x_test, ep.num_samples, ep.seed, ds.y_test)
    gan = train.build(p, channels=data_mod.channels_of(ds))
    clock = {"scoring": 0.0, "start": time.perf_counter()}

    def score(step: int) -> None:
        t0 = time.perf_counter()
        sampler = standing_statistics(float32_copy(gan.sampler), p.seed, p.standing_samples)
        gen = evaluate.sample(sampler, ep.num_samples, ep.seed)
        m = evaluate.score(gen, real, labels, ds.x_train, judge, ep).metrics
        images.save_png(images.grid(gen[:64], cols=8), out.parent / f"samples_{step:06d}.png", scale=2)
        if step == p.steps:
            sampler.save(out.parent / "generator.keras")
        trained = t0 - clock["start"] - clock["scoring"]
        row = {"step": step, "train_s": round(trained, 1), **{k: m[k] for k in COLUMNS[2:]}}
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print("  " + ", ".join(f"{k}={v:.4g}" for k, v in row.items()), flush=True)
        clock["scoring"] += time.perf_counter() - t0

    class Scorer(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            step = int(self.model.step.numpy())
            if step % every == 0 and step < p.steps:
                score(step)

    train.fit(gan, p, ds.x_train, verbose=0, extra_callbacks=[Scorer()])
    score(p.steps)


def curve_key(doc: dict, every: int, data: Path, judge: Path) -> str:
    """What a candidate's curve depends on: its params, the scoring interval, the data and the judge."""
    digests = [hashlib.sha256(f.read_bytes()).hexdigest() for f in (data, judge)]
    return json.dumps([doc, every, digests], sort_keys=True)


def kept_curve(d: Path, key: str, steps: int) -> list[dict] | None:
    """The rows of the curve scored before in `d` under `key`, once it reached `steps`; else None."""
    key_file, out = d / "curve.key", d / "curve.jsonl"
    if not (key_file.is_file() and out.is_file()) or key_file.read_text() != key:
        return None
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    return rows if rows and rows[-1]["step"] == steps else None


def plot(table: list[dict], path: Path) -> None:
    """Modes covered and class KL against training minutes, a line per candidate: the
    curve the table's rows trace, written atomically as SVG to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.hashsalt"] = "curves"  # fixed element ids: the same rows give the same file
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name in dict.fromkeys(r["candidate"] for r in table):
        rows = [r for r in table if r["candidate"] == name]
        for ax, key in zip(axes, ("modes_covered", "class_kl")):
            ax.plot([r["train_s"] / 60 for r in rows], [r[key] for r in rows], marker="o", label=name)
    axes[0].set(xlabel="training minutes (scoring excluded)", ylabel="modes covered")
    axes[1].set(xlabel="training minutes (scoring excluded)", ylabel="class KL (generated || uniform)", yscale="log")
    axes[0].legend(fontsize="small")
    fig.tight_layout()
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="svg", metadata={"Date": None})  # nor a date
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    ap.add_argument("--recipe", type=Path, action="append", default=[],
                    help="a candidate: recipes/<name>.yaml (repeat; none: params.yaml's default)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="for every candidate")
    ap.add_argument("--every", type=int, default=1000, help="score every N steps (and at the end)")
    ap.add_argument("--seed", type=int, help="train.seed for every candidate")
    ap.add_argument("--data", type=Path)
    ap.add_argument("--judge", type=Path)
    ap.add_argument("--work", type=Path)
    ap.add_argument("--one", nargs=3, metavar=("PARAMS", "OUT", "_"), help=argparse.SUPPRESS)
    results.add_arguments(ap)
    args = ap.parse_args(argv)

    work = args.work or Path(tempfile.mkdtemp(prefix="curves-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}", "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": str(ROOT)}
    if args.one:
        curve(Path(args.one[0]), args.data, args.judge, args.every, Path(args.one[1]))
        return

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
    extra = args.set + ([f"train.seed={args.seed}"] if args.seed is not None else [])
    table = []
    say = results.Printout()
    for name, sets in candidates:
        d = work / name
        d.mkdir(exist_ok=True)
        doc = params.with_sets(yaml.safe_load(args.params.read_text()), sets + extra)
        key = curve_key(doc, args.every, data, judge)
        rows = kept_curve(d, key, doc["train"]["steps"])
        say(f"{name}: {' '.join(sets + extra) or 'params.yaml'}{'; scored before, kept' if rows else ''}")
        if rows is None:
            (d / "curve.key").unlink(missing_ok=True)
            (d / "params.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
            out = d / "curve.jsonl"
            out.unlink(missing_ok=True)
            proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--one", str(d / "params.yaml"),
                                   str(out), "_", "--every", str(args.every), "--data", str(data),
                                   "--judge", str(judge), "--work", str(d)], env=env)
            if proc.returncode:
                raise SystemExit(f"{name}: exited {proc.returncode}")
            atomic.write_text(d / "curve.key", key)
            rows = [json.loads(line) for line in out.read_text().splitlines()]
        table += [{"candidate": name, **r} for r in rows]

    print(f"\n{cpu_model()}; for every candidate: {' '.join(extra) or 'nothing'}; work: {work}\n")
    say.keep(f"\nfor every candidate: {' '.join(extra) or 'nothing'}\n")
    say("| candidate | " + " | ".join(COLUMNS) + " |")
    say("|---" * (len(COLUMNS) + 1) + "|")
    for r in table:
        say(f"| {r['candidate']} | " + " | ".join(f"{r[k]:.4g}" for k in COLUMNS) + " |")
    if args.results is not None:
        plot(table, args.results / "curves.svg")
        figure = "\n![modes covered and class KL against training minutes](curves.svg)\n"
        results.publish("curves", "Quality against training time", say.markdown() + figure, argv=argv,
                        out=args.results)


if __name__ == "__main__":
    main()
