"""Stage `prepare`: MNIST from the configured source to a uint8 npz and a report.

    python -m pipeline.prepare --params params.yaml --out data/prepared/mnist.npz --report reports/data.json
"""
from __future__ import annotations

import argparse

import numpy as np

from pipeline import atomic, data, params
from pipeline.errors import run_stage


def report(ds: data.Mnist, source: str, source_sha256: str, digits: list[int]) -> dict:
    def counts(y: np.ndarray) -> dict[str, int]:
        return {str(d): int(n) for d, n in enumerate(np.bincount(y, minlength=10))}

    return {
        "source": source,
        "source_sha256": source_sha256,
        "data_sha256": data.arrays_sha256(ds),
        "digits": digits or list(range(10)),
        "train": {"n": int(len(ds.y_train)), "per_class": counts(ds.y_train)},
        "test": {"n": int(len(ds.y_test)), "per_class": counts(ds.y_test)},
    }


def prepare(p: params.PrepareParams) -> tuple[data.Mnist, dict]:
    ds, source_sha = data.load(p.source, p.path)
    ds = data.select(ds, sorted(set(p.digits)), p.limit)
    if len(ds.y_train) == 0 or len(ds.y_test) == 0:
        raise data.StageError(f"prepare.digits={p.digits}: no images left to train or test on")
    return ds, report(ds, p.source, source_sha, sorted(set(p.digits)))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", required=True)
    ap.add_argument("--report", required=True)
    args = ap.parse_args(argv)

    p = params.load("prepare", args.params)
    ds, rep = prepare(p)
    data.save_npz(ds, args.out)
    atomic.write_json(args.report, rep)
    print(f"prepare: {rep['train']['n']} train / {rep['test']['n']} test images from {p.source} -> {args.out}")


if __name__ == "__main__":
    run_stage(main)
