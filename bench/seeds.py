"""The default recipe (or any params) over several training seeds: the gate's
headline numbers per seed, and their mean and standard deviation.

    python bench/seeds.py                               # params.yaml, train.seed 0..4
    python bench/seeds.py --seeds 0 1 --set train.steps=8000 --set train.loss=hinge
    python bench/seeds.py --seeds 0 --recipe recipes/dcgan.yaml   # a recipe's overrides, then --set's

Runs the pipeline's own stages as subprocesses in a work folder: prepare and
judge once (or `--data`/`--judge` to reuse the workspace's), then train and
evaluate per seed, with MLflow on a store of its own. Prints a Markdown table
(the README's headline table is its mean row) and, per seed, whether the gate passed, and
writes them to docs/results/seeds.md (`--results DIR`, `--no-results`).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench import results  # noqa: E402
from ops.recipe import overrides as recipe_overrides  # noqa: E402
from pipeline import params  # noqa: E402

COLUMNS = ("train_s", "fcd", "classifier_score_ratio", "precision", "recall", "kid", "kid_std", "modes_covered",
           "class_kl", "copying_z", "quality_gate_passed")


def cpu_model() -> str:
    return results.machine().one_line()


def stage(module: str, *args: str, env: dict) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", f"pipeline.{module}", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{module} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0


def shared_stages(work: Path, data: Path, judge: Path, env: dict) -> None:
    """prepare and judge on `work/params.yaml`, each unless its output is there already."""
    if not data.is_file():
        t = stage("prepare", "--params", str(work / "params.yaml"), "--out", str(data), "--report",
                  str(work / "data.json"), env=env)
        print(f"prepare: {t:.0f} s", flush=True)
    if not judge.is_file():
        t = stage("judge", "--params", str(work / "params.yaml"), "--data", str(data), "--model", str(judge),
                  "--report", str(work / "judge.json"), env=env)
        print(f"judge: {t:.0f} s", flush=True)


def train_and_evaluate(d: Path, data: Path, judge: Path, env: dict) -> tuple[float, float, dict]:
    """train and evaluate on `d/params.yaml`, the two as one MLflow result run (its record in
    `d/result.json`); returns their seconds and the metrics."""
    t = stage("train", "--params", str(d / "params.yaml"), "--data", str(data), "--model",
              str(d / "generator.keras"), "--reports", str(d / "train"), "--checkpoints", str(d / "ckpt"),
              "--run-file", str(d / "run.json"), env=env)
    e = stage("evaluate", "--params", str(d / "params.yaml"), "--generator", str(d / "generator.keras"),
              "--data", str(data), "--judge", str(judge), "--out", str(d / "eval"),
              "--training-run", str(d / "run.json"), "--run-file", str(d / "result.json"), env=env)
    return t, e, json.loads((d / "eval/metrics.json").read_text())


def main(argv: list[str] | None = None) -> list[str]:
    """Runs the seeds and prints the table; returns the lines of its results page."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="like dvc exp run -S")
    ap.add_argument("--recipe", type=Path, help="recipes/<name>.yaml: overrides applied before --set's")
    ap.add_argument("--data", type=Path, help="prepared data to reuse (default: prepare it here)")
    ap.add_argument("--judge", type=Path, help="a judge to reuse (default: train it here)")
    ap.add_argument("--work", type=Path, help="work folder (default: a temporary one)")
    results.add_arguments(ap)
    args = ap.parse_args(argv)
    if args.recipe:
        args.set = recipe_overrides(args.recipe) + args.set

    work = args.work or Path(tempfile.mkdtemp(prefix="seeds-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}", "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": str(ROOT), "DVC_ROOT": str(work)}
    base = params.with_sets(yaml.safe_load(args.params.read_text()), args.set)
    (work / "params.yaml").write_text(yaml.safe_dump(base, sort_keys=False))
    data, judge = args.data or work / "mnist.npz", args.judge or work / "judge.keras"
    shared_stages(work, data, judge, env)

    rows = []
    say = results.Printout()
    for seed in args.seeds:
        d = work / f"seed{seed}"
        d.mkdir(exist_ok=True)
        (d / "params.yaml").write_text(yaml.safe_dump(params.with_sets(base, [f"train.seed={seed}"]), sort_keys=False))
        seconds, _, m = train_and_evaluate(d, data, judge, env)
        row = {"seed": seed, "train_s": seconds, **{k: m[k] for k in COLUMNS[1:]}}
        rows.append(row)
        say(f"seed {seed}: " + ", ".join(f"{k}={row[k]:.4g}" for k in COLUMNS))

    print(f"\n{cpu_model()}; overrides: {' '.join(args.set) or 'none'}; work: {work}\n")
    say.keep(f"\noverrides: {' '.join(args.set) or 'none'}\n")
    say("| seed | " + " | ".join(COLUMNS) + " |")
    say("|---" * (len(COLUMNS) + 1) + "|")
    for r in rows:
        say(f"| {r['seed']} | " + " | ".join(f"{r[k]:.4g}" for k in COLUMNS) + " |")
    say("| mean ± std | " + " | ".join(
        f"{np.mean([r[k] for r in rows]):.4g} ± {np.std([r[k] for r in rows]):.2g}" for k in COLUMNS) + " |")
    passed = sum(int(r["quality_gate_passed"]) for r in rows)
    say(f"\ngate passed on {passed} of {len(rows)} seeds; lowest classifier-score ratio "
        f"{min(r['classifier_score_ratio'] for r in rows):.4f}")
    if args.results is not None:
        results.publish("seeds", "Quality over training seeds", say.markdown(), argv=argv, out=args.results)
        if args.results == results.RESULTS and args.params == ROOT / "params.yaml" and not args.set:
            results.readme_block("seeds", headline(rows))
    return say.lines


def headline(rows: list[dict]) -> str:
    """The README's table: the default's mean ± std over the seeds, as the page prints them."""
    keys = ("fcd", "classifier_score_ratio", "precision", "recall", "modes_covered", "train_s")
    cells = [f"{np.mean([r[k] for r in rows]):.4g} ± {np.std([r[k] for r in rows]):.2g}" for k in keys]
    passed = sum(int(r["quality_gate_passed"]) for r in rows)
    return (f"`params.yaml`'s default over {len(rows)} training seeds, on {results.machine().one_line()} "
            "([results](docs/results/seeds.md)):\n\n"
            "| gate passed | " + " | ".join(keys) + " |\n|---" * 1 + "|---" * len(keys) + "|\n"
            f"| {passed} of {len(rows)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
