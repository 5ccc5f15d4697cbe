"""Benchmark: the evaluate stage's exact nearest-training-image L1 against
scipy's `cdist(metric="cityblock")` on the same data, in one run.

    python bench/eval_speed.py --data data/prepared/mnist.npz [--queries 10000] [--rounds 10]
                               [--results DIR | --no-results]

The queries are split into rounds; each round times the stage's kernel on its
share of the queries and `cdist` on a slice of them against the same 60,000
training images, back to back, so both see the same load on a shared machine,
and the round's ratio is taken then. cdist builds the whole (n, m) float64
matrix, so it gets a small slice (memory bounded the way a user would have to)
and is compared per absolute difference; its result must equal the kernel's
exactly. Prints abs-differences per second, the per-round ratios and their median,
and writes them to docs/results/eval_speed.md (bench/results.py).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy.spatial.distance import cdist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import results  # noqa: E402
from pipeline import data, metrics  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="data/prepared/mnist.npz")
    ap.add_argument("--queries", type=int, default=10000, help="queries for the stage's kernel, in all")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--baseline-queries", type=int, default=20, help="queries for cdist per round")
    results.add_arguments(ap)
    args = ap.parse_args(argv)

    ds = data.load_prepared(args.data)
    train, queries = ds.x_train, ds.x_test[:args.queries]
    d = train[0].size
    train_f64 = train.reshape(len(train), -1).astype(np.float64)
    metrics.nearest_l1(queries[:2], train[:2])  # compile outside the timing

    t_ours = t_ref = 0.0
    n_ref = 0
    ratios, exact = [], True
    for part in np.array_split(np.arange(len(queries)), args.rounds):
        q = queries[part]
        t0 = time.perf_counter()
        dist, idx = metrics.nearest_l1(q, train)
        dt_ours = time.perf_counter() - t0

        nb = min(args.baseline_queries, len(q))
        t0 = time.perf_counter()
        ref = cdist(q[:nb].reshape(nb, -1).astype(np.float64), train_f64, "cityblock")
        dt_ref = time.perf_counter() - t0

        # Both are integer sums of |a - b| in 8-bit units underneath.
        exact &= (np.array_equal(np.rint(dist[:nb] * 255.0 * d), ref.min(axis=1))
                  and np.array_equal(idx[:nb], ref.argmin(axis=1)))
        ratios.append((len(q) / dt_ours) / (nb / dt_ref))
        t_ours, t_ref, n_ref = t_ours + dt_ours, t_ref + dt_ref, n_ref + nb

    per_query = len(train) * d
    say = results.Printout()
    say(f"nearest-train L1: {len(queries)} queries x {len(train)} training images x {d} pixels, "
        f"{args.rounds} rounds")
    say(f"  pipeline.metrics.nearest_l1, all {len(queries)} queries: {t_ours:7.2f} s  "
        f"{len(queries) * per_query / t_ours / 1e9:6.2f}e9 abs-diffs/s")
    say(f"  scipy cdist cityblock, {n_ref} queries:        {t_ref:7.2f} s  "
        f"{n_ref * per_query / t_ref / 1e9:6.2f}e9 abs-diffs/s "
        f"(all {len(queries)} queries: ~{t_ref * len(queries) / n_ref:.0f} s)")
    say(f"  ratio per round: {' '.join(f'{r:.1f}' for r in ratios)}")
    say(f"  ratio: median {np.median(ratios):.1f}x faster (overall {(len(queries) / t_ours) / (n_ref / t_ref):.1f}x); "
        f"identical to cdist on its queries: {exact}")
    if args.results is not None:
        results.publish("eval_speed", "Nearest-training-image L1: the evaluate stage's kernel against scipy's cdist",
                        say.markdown(), argv=argv, out=args.results)


if __name__ == "__main__":
    main()
