"""Stage `judge`: a small MNIST CNN that the evaluation uses as its classifier.

    python -m pipeline.judge --params params.yaml --data data/prepared/mnist.npz \
        --model models/judge.keras --report reports/judge.json

It stands in for TF-GAN's downloadable MNIST classifier: its softmax gives the
class metrics (modes, KL, classifier score) and its penultimate layer,
`features`, the space for the distance metrics (Fréchet, KID, precision/recall).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from pipeline import atomic, data, params
from pipeline.errors import StageError, run_stage

FEATURES = "features"


def to_input(pixels: np.ndarray) -> np.ndarray:
    """8-bit images (n, 28, 28) to the judge's input: floats in [0, 1], (n, 28, 28, 1)."""
    return (np.asarray(pixels, np.float32) / 255.0)[..., None]


def build(p: params.JudgeParams):
    import keras
    from keras import layers

    x = inp = keras.Input((28, 28, 1), name="image")
    # BatchNorm momentum 0.9, not 0.99: the moving statistics must settle within a few hundred steps.
    for width in (p.width, 2 * p.width):
        x = layers.Conv2D(width, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization(momentum=0.9)(x)
        x = layers.ReLU()(x)
        x = layers.Conv2D(width, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization(momentum=0.9)(x)
        x = layers.ReLU()(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dropout(0.3, seed=p.seed)(x)
    x = layers.Dense(p.feature_dim, activation="relu", name=FEATURES)(x)
    out = layers.Dense(10, activation="softmax", name="probs")(x)
    return keras.Model(inp, out, name="judge")


def train(ds: data.Mnist, p: params.JudgeParams, verbose: int = 0):
    """Fit the judge on the training split; returns (model, report)."""
    import keras

    if len(ds.x_train) == 0:
        raise StageError("judge: the prepared training split is empty")
    keras.utils.set_random_seed(p.seed)
    model = build(p)
    steps = p.epochs * -(-len(ds.x_train) // p.batch_size)
    # One-cycle-like decay: a high rate early, annealed to zero, reaches 99% in a few epochs.
    lr = keras.optimizers.schedules.CosineDecay(p.learning_rate, decay_steps=steps, alpha=0.0)
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    t0 = time.perf_counter()
    model.fit(to_input(ds.x_train), ds.y_train, batch_size=p.batch_size, epochs=p.epochs,
              shuffle=True, verbose=verbose)
    seconds = time.perf_counter() - t0
    report = {"train_seconds": round(seconds, 1), "num_train": int(len(ds.x_train)),
              "num_test": int(len(ds.x_test))}
    if len(ds.x_test):
        probs = model.predict(to_input(ds.x_test), batch_size=1000, verbose=0)
        report["test_accuracy"] = float(np.mean(probs.argmax(1) == ds.y_test))
    return model, report


def load(path: str | Path):
    """The judge as a model image -> (features, probs)."""
    import keras

    path = Path(path)
    if not path.is_file():
        raise StageError(f"{path}: judge not found; run `dvc repro judge` or pass --judge")
    model = keras.models.load_model(path, compile=False)
    return keras.Model(model.inputs, [model.get_layer(FEATURES).output, model.outputs[0]])


def embed(judge, pixels: np.ndarray, batch: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """Judge features (n, feature_dim) and class probabilities (n, 10), float64."""
    feats, probs = [], []
    for i in range(0, len(pixels), batch):
        f, p = judge.predict_on_batch(to_input(pixels[i:i + batch]))
        feats.append(np.asarray(f, np.float64))
        probs.append(np.asarray(p, np.float64))
    return np.concatenate(feats), np.concatenate(probs)


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
