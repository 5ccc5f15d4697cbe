"""Benchmark: the evaluate stage's exact nearest-training-image L1 against
scipy's `cdist(metric="cityblock")` on the same data, in one run.

    python bench/eval_speed.py --data data/prepared/mnist.npz [--queries 10000] [--baseline-queries 200]

cdist builds the whole (n, m) float64 matrix, so it runs on a slice of the
queries (memory bounded the same way a user would have to) and its time is
scaled per absolute difference; both results are checked to agree exactly on
that slice. Prints abs-differences per second of each and the ratio.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.spatial.distance import cdist

from pipeline import data, metrics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="data/prepared/mnist.npz")
    ap.add_argument("--queries", type=int, default=10000, help="queries for the stage's kernel")
    ap.add_argument("--baseline-queries", type=int, default=200, help="queries for cdist")
    args = ap.parse_args()

    ds = data.load_prepared(args.data)
    train, queries = ds.x_train, ds.x_test[:args.queries]
    d = train[0].size
    metrics.nearest_l1(queries[:2], train[:2])  # compile outside the timing

    t0 = time.perf_counter()
    dist, idx = metrics.nearest_l1(queries, train)
    t_ours = time.perf_counter() - t0
    ours = len(queries) * len(train) * d / t_ours

    nb = min(args.baseline_queries, len(queries))
    t0 = time.perf_counter()
    ref = cdist(queries[:nb].reshape(nb, -1).astype(np.float64),
                train.reshape(len(train), -1).astype(np.float64), "cityblock")
    t_ref = time.perf_counter() - t0
    base = nb * len(train) * d / t_ref

    # Both are integer sums of |a - b| in 8-bit units underneath.
    exact = (np.array_equal(np.rint(dist[:nb] * 255.0 * d), ref.min(axis=1))
             and np.array_equal(idx[:nb], ref.argmin(axis=1)))
    print(f"nearest-train L1: {len(queries)} queries x {len(train)} training images x {d} pixels")
    print(f"  pipeline.metrics.nearest_l1: {t_ours:8.2f} s  {ours / 1e9:6.2f}e9 abs-diffs/s")
    print(f"  scipy cdist cityblock ({nb} queries): {t_ref:8.2f} s  {base / 1e9:6.2f}e9 abs-diffs/s")
    print(f"  cdist on all {len(queries)} queries, extrapolated: {t_ref * len(queries) / nb:8.1f} s")
    print(f"  ratio: {ours / base:.1f}x faster; identical on the cdist slice: {exact}")


if __name__ == "__main__":
    main()
