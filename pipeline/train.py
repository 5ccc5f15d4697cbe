"""Stage `train`: one GAN trained with fit() over a tf.data pipeline.

    python -m pipeline.train --params params.yaml --data data/prepared/mnist.npz \
        --model models/generator.keras --reports reports/train --run-file reports/mlflow_run.json
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

from pipeline import atomic, data, images, params, tracking
from pipeline.errors import StageError, run_stage


def dataset(x: np.ndarray, batch_size: int, seed: int):
    """Shuffled, repeated, batched, prefetched images in [-1, 1]."""
    import tensorflow as tf

    if len(x) < batch_size:
        raise StageError(f"train.batch_size={batch_size} is larger than the training set ({len(x)} images)")
    ds = tf.data.Dataset.from_tensor_slices(images.from_uint8(x))
    return (ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True).repeat()
            .batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE))


def build(p: params.TrainParams):
    import keras

    from pipeline.gan import GAN
    from pipeline.models import build_discriminator, build_generator

    keras.utils.set_random_seed(p.seed)
    gan = GAN(build_generator(p.arch, p.z_dim), build_discriminator(p.arch), p.z_dim, p.seed)
    opt = {"adam": keras.optimizers.Adam, "rmsprop": keras.optimizers.RMSprop}[p.optimizer]
    gan.compile(d_optimizer=opt(p.d_lr), g_optimizer=opt(p.g_lr))
    return gan


def fixed_z(p: params.TrainParams, n: int = 16) -> np.ndarray:
    return np.random.default_rng(p.seed).standard_normal((n, p.z_dim)).astype(np.float32)


def train(p: params.TrainParams, x: np.ndarray, reports: Path, run_id: str | None, verbose: int = 1):
    """Train on uint8 images; returns the GAN and the loss history."""
    from pipeline.callbacks import LossHistory, SampleGrid

    ds = dataset(x, p.batch_size, p.seed)
    gan = build(p)
    history = LossHistory(p.log_every, run_id)
    samples = SampleGrid(fixed_z(p), p.sample_every, reports / "samples", run_id)
    gan.fit(ds, epochs=1, steps_per_epoch=p.steps, callbacks=[history, samples], verbose=verbose)
    losses = np.array([[r["d_loss"], r["g_loss"]] for r in history.rows])
    if not np.all(np.isfinite(losses)):
        bad = history.rows[int(np.argmax(~np.isfinite(losses).all(axis=1)))]["step"]
        raise StageError(f"train: loss became NaN or inf at step {bad}")
    return gan, history


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--reports", required=True)
    ap.add_argument("--run-file", required=True)
    args = ap.parse_args(argv)

    p = params.load("train", args.params)
    ds = data.load_prepared(args.data)
    reports = Path(args.reports)
    shutil.rmtree(reports / "samples", ignore_errors=True)

    with tracking.run(args.run_file, new=True) as active:
        import mlflow

        mlflow.log_params({f"train.{k}": v for k, v in p.model_dump().items()})
        mlflow.log_param("train.n_images", len(ds.x_train))
        gan, history = train(p, ds.x_train, reports, active.info.run_id)
        history.to_csv(reports / "losses.csv")
        with atomic.atomic_path(args.model) as tmp:
            gan.generator.save(tmp)
        atomic.write_json(args.run_file, tracking.run_record(active))
    print(f"train: {p.steps} steps of {p.arch}/{p.loss}; generator -> {args.model}")


if __name__ == "__main__":
    run_stage(main)
