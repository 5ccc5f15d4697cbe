"""Stage `judge`: a small MNIST CNN that the evaluation uses as its classifier.

    python -m pipeline.judge --params params.yaml --data data/prepared/mnist.npz \
        --model models/judge.keras --report reports/judge.json

The network itself (builder, loader, embedding) lives in `pipeline.classifier`,
which the evaluate stage shares.
"""
from __future__ import annotations

import argparse
import time
import numpy as np

from pipeline import atomic, classifier, data, params
from pipeline.errors import StageError, run_stage


def train(ds: data.Mnist, p: params.JudgeParams, verbose: int = 0):
    """Fit the judge on the training split; returns (model, report)."""
    import keras

    if len(ds.x_train) == 0:
        raise StageError("judge: the prepared training split is empty")
    keras.utils.set_random_seed(p.seed)
    model = classifier.build(p)
    steps = p.epochs * -(-len(ds.x_train) // p.batch_size)
    # One-cycle-like decay: a high rate early, annealed to zero, reaches 99% in a few epochs.
    lr = keras.optimizers.schedules.CosineDecay(p.learning_rate, decay_steps=steps, alpha=0.0)
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    t0 = time.perf_counter()
    model.fit(classifier.to_input(ds.x_train), ds.y_train, batch_size=p.batch_size, epochs=p.epochs,
              shuffle=True, verbose=verbose)
    seconds = time.perf_counter() - t0
    report = {"train_seconds": round(seconds, 1), "num_train": int(len(ds.x_train)),
              "num_test": int(len(ds.x_test))}
    if len(ds.x_test):
        probs = model.predict(classifier.to_input(ds.x_test), batch_size=1000, verbose=0)
        report["test_accuracy"] = float(np.mean(probs.argmax(1) == ds.y_test))
    return model, report


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--report", required=True)
    args = ap.parse_args(argv)

    p = params.load("judge", args.params)
    ds = data.load_prepared(args.data)
    model, report = train(ds, p, verbose=2)
    with atomic.atomic_path(args.model, suffix=".keras") as tmp:
        model.save(tmp)
    atomic.write_json(args.report, report)
    print("judge: " + ", ".join(f"{k}={v}" for k, v in report.items()))


if __name__ == "__main__":
    run_stage(main)
