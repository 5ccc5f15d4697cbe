"""The conditional recipe (train.condition) over several training seeds, and seed
004's way of asking for a digit, one GAN trained on that digit alone, as a baseline.

    python bench/conditional.py                                  # recipes/conditional.yaml, seeds 0..4, digit 7
    python bench/conditional.py --seeds 0 --baseline-digit 3 --set train.steps=2000

Per seed: how often the judge reads the digit asked for (beside its accuracy on
real held-out digits), the worst digit's share and diversity, each digit's FCD
against real images of that digit, the figures on all samples together, the
gate, and the training's seconds. The baseline trains one unconditional GAN on
the one digit for a tenth of the recipe's steps (ten such GANs take the
conditional generator's total), and is scored against real images of that
digit. The unconditional default's own table is docs/results/seeds.md.

Runs the pipeline's stages as subprocesses (bench/seeds.py's), with MLflow on a
store of its own, and writes docs/results/conditional.md (`--results DIR`,
`--no-results`).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench import results  # noqa: E402
from bench.seeds import shared_stages, stage, train_and_evaluate  # noqa: E402
from ops.recipe import overrides as recipe_overrides  # noqa: E402
from pipeline import params  # noqa: E402

COLUMNS = ("train_s", "cond_accuracy", "cond_accuracy_real", "cond_cross_entropy", "digit_accuracy_ratio_min",
           "digit_diversity_min", "fcd", "classifier_score_ratio", "quality_gate_passed")
DIGITS = range(10)
BASELINE = ("train_s", "fcd", "diversity_ratio", "precision", "recall")


def fmt(v) -> str:
    return f"{v:.4g}"


def mean_std(values) -> str:
    return f"{np.mean(values):.4g} ± {np.std(values):.2g}"


def baseline(work: Path, base: dict, digit: int, judge: Path, env: dict) -> dict:
    """Seed 004's route to one digit: prepare keeps `digit` alone, an unconditional GAN
    trains on it for a tenth of the steps, scored against real images of that digit."""
    d = work / f"one_digit_{digit}"
    d.mkdir(exist_ok=True)
    doc = params.with_sets(base, ["train.condition=none", f"prepare.digits=[{digit}]",
                                  f"train.steps={max(1, base['train']['steps'] // 10)}", "train.seed=0"])
    (d / "params.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    data = d / "mnist.npz"
    stage("prepare", "--params", str(d / "params.yaml"), "--out", str(data), "--report", str(d / "data.json"),
          env=env)
    seconds, _, m = train_and_evaluate(d, data, judge, env)
    return {"steps": doc["train"]["steps"], "train_s": seconds, **{k: m[k] for k in BASELINE[1:]}}


def main(argv: list[str] | None = None) -> list[str]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    ap.add_argument("--recipe", type=Path, default=ROOT / "recipes/conditional.yaml")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="like dvc exp run -S")
    ap.add_argument("--baseline-digit", type=int, default=7, choices=DIGITS)
    ap.add_argument("--data", type=Path, help="prepared data to reuse (default: prepare it here)")
    ap.add_argument("--judge", type=Path, help="a judge to reuse (default: train it here)")
    ap.add_argument("--work", type=Path, help="work folder (default: a temporary one)")
    results.add_arguments(ap)
    args = ap.parse_args(argv)
    sets = recipe_overrides(args.recipe) + args.set

    work = args.work or Path(tempfile.mkdtemp(prefix="conditional-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}", "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": str(ROOT), "DVC_ROOT": str(work)}
    base = params.with_sets(yaml.safe_load(args.params.read_text()), sets)
    (work / "params.yaml").write_text(yaml.safe_dump(base, sort_keys=False))
    data, judge = args.data or work / "mnist.npz", args.judge or work / "judge.keras"
    shared_stages(work, data, judge, env)

    say = results.Printout()
    rows = []
    for seed in args.seeds:
        d = work / f"seed{seed}"
        d.mkdir(exist_ok=True)
        (d / "params.yaml").write_text(yaml.safe_dump(params.with_sets(base, [f"train.seed={seed}"]), sort_keys=False))
        seconds, _, m = train_and_evaluate(d, data, judge, env)
        rows.append({"seed": seed, "train_s": seconds, **{k: m[k] for k in COLUMNS[1:]},
                     **{f"fcd_digit_{k}": m[f"fcd_digit_{k}"] for k in DIGITS}})
        say(f"seed {seed}: " + ", ".join(f"{k}={fmt(rows[-1][k])}" for k in COLUMNS))
    one = baseline(work, base, args.baseline_digit, judge, env)
    say(f"one GAN on digit {args.baseline_digit}: " + ", ".join(f"{k}={fmt(one[k])}" for k in BASELINE))

    say.keep(f"\nrecipe: `{args.recipe.relative_to(ROOT) if args.recipe.is_relative_to(ROOT) else args.recipe}`; "
             f"overrides: {' '.join(sets)}\n")
    say("| seed | " + " | ".join(COLUMNS) + " |")
    say("|---" * (len(COLUMNS) + 1) + "|")
    for r in rows:
        say(f"| {r['seed']} | " + " | ".join(fmt(r[k]) for k in COLUMNS) + " |")
    say("| mean ± std | " + " | ".join(mean_std([r[k] for r in rows]) for k in COLUMNS) + " |")
    say("\nEach digit's FCD against real held-out images of that digit (compare only with one another):\n")
    say("| seed | " + " | ".join(str(k) for k in DIGITS) + " |")
    say("|---" * 11 + "|")
    for r in rows:
        say(f"| {r['seed']} | " + " | ".join(fmt(r[f'fcd_digit_{k}']) for k in DIGITS) + " |")
    say("| mean ± std | " + " | ".join(mean_std([r[f"fcd_digit_{k}"] for r in rows]) for k in DIGITS) + " |")
    say(f"\nSeed 004's route to digit {args.baseline_digit}: one unconditional GAN trained on that digit alone "
        f"for {one['steps']} steps (a tenth of the recipe's: ten of them train as long as one conditional "
        "generator), scored against real images of that digit; its fcd compares with the column "
        f"{args.baseline_digit} above.\n")
    say("| " + " | ".join(BASELINE) + " |")
    say("|---" * len(BASELINE) + "|")
    say("| " + " | ".join(fmt(one[k]) for k in BASELINE) + " |")
    worst = min(r["cond_accuracy"] for r in rows)
    passed = sum(int(r["quality_gate_passed"]) for r in rows)
    say(f"\ngate passed on {passed} of {len(rows)} seeds; lowest cond_accuracy {worst:.4f}; the unconditional "
        "default over seeds: [seeds](seeds.md)")
    if args.results is not None:
        results.publish("conditional", "Asking for a digit: the conditional recipe over training seeds",
                        say.markdown(), argv=argv, out=args.results)
    return say.lines


if __name__ == "__main__":
    main()
