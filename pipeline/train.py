"""Stage `train`: one GAN trained with fit() over a tf.data pipeline, resumable.

    python -m pipeline.train --params params.yaml --data data/prepared/mnist.npz \
        --model models/generator.keras --reports reports/train \
        --checkpoints models/checkpoints --run-file reports/train/run.json

A run stopped at any point (Ctrl-C, SIGKILL, a crash) and started again with
the same params and data resumes from its last checkpoint, continues the same
MLflow run, and finishes at exactly `train.steps`.

With `train.strategy: multi_worker` the same command runs once per host, each
with its own TF_CONFIG (docs/team.md#training-across-hosts); the chief
alone tracks and writes, and the others only train (see `main`).
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np

from pipeline import atomic, data, distribution, images, params, tracking
from pipeline.archs import DIGITS, OptimizerParams
from pipeline.errors import StageError, run_stage

FIXED_Z = 64  # samples in the collapse watch; the grid shows the first 16
RESUMES_FROM_CHECKPOINT = True  # run again after a stop, it goes on from its last checkpoint (errors.run_stage)


def dataset(x: np.ndarray, batch_size: int, seed: int, skip_batches: int = 0, n_critic: int = 1,
            y: np.ndarray | None = None):
    """Shuffled, repeated, prefetched images in [-1, 1], in steps of shape
    (batch_size, n_critic, 28, 28, channels): column i is the i-th of n_critic
    consecutive batches, for critic update i. `skip_batches` replays the order
    of a run that already consumed that many steps. With labels `y`, each step is
    (images, their labels (batch_size, n_critic) int32), for a conditional GAN.

    Each epoch's order is a stateless shuffle keyed on (seed, epoch), so it is
    the same however often, and by whom, the dataset was iterated before
    (tf.data's own reshuffling advances with every iterator made, and Keras and
    tf.distribute make different numbers of them). A strategy splits each step
    along its first axis: every replica gets its rows of every critic update,
    and the global batch is the same for any number of replicas or workers.
    Each worker runs this whole pipeline and keeps its replicas' rows (sharding
    by DATA: the images are in memory, there are no files to shard)."""
    import tensorflow as tf

    n = batch_size * n_critic
    if len(x) < n:
        times = f" x n_critic={n_critic}" if n_critic > 1 else ""
        raise StageError(f"train.batch_size={batch_size}{times} is larger than the training set ({len(x)} images)")
    pixels = tf.constant(images.from_uint8(x))
    channels = pixels.shape[-1]

    def epoch_order(epoch):
        return tf.random.experimental.stateless_shuffle(tf.range(len(x), dtype=tf.int64),
                                                        seed=tf.stack([tf.constant(seed, tf.int64), epoch]))

    ds = tf.data.Dataset.counter().map(epoch_order).unbatch().batch(n, drop_remainder=True)
    if skip_batches:
        ds = ds.skip(skip_batches)
    def step(rows):
        images_ = tf.transpose(tf.reshape(tf.gather(pixels, rows), (n_critic, batch_size, 28, 28, channels)),
                               (1, 0, 2, 3, 4))
        if labels is None:
            return images_
        return images_, tf.transpose(tf.reshape(tf.gather(labels, rows), (n_critic, batch_size)))

    labels = None if y is None else tf.constant(np.asarray(y, np.int32))
    ds = ds.map(step)
    # Nothing here to tune, and with autotuning on, an iterator's teardown waits for
    # the tuner's next wake-up.
    options = tf.data.Options()
    options.autotune.enabled = False
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.prefetch(2).with_options(options)


def _optimizer(o: OptimizerParams, lr: float):
    import keras

    if o.name == "adam":
        return keras.optimizers.Adam(lr, beta_1=o.beta_1, beta_2=o.beta_2)
    return keras.optimizers.RMSprop(lr)


def build(p: params.TrainParams, precision: str | None = None, strategy=None, channels: int = 1):
    """The compiled GAN for these params and images of `channels`, its variables made in
    the scope of `strategy` (default: `train.strategy`'s), its layers computing in
    `precision` (default: `train.precision` resolved)."""
    import keras

    from pipeline.gan import GAN
    from pipeline.models import build_discriminator, build_generator

    strategy = distribution.strategy(p.strategy) if strategy is None else strategy
    keras.utils.set_random_seed(p.seed)
    o = p.optimizer
    precision = precision or distribution.precision_for(p.precision)
    with strategy.scope(), distribution.dtype_policy(precision):
        generator, discriminator = build_generator(p, channels), build_discriminator(p, channels)
        if p.strategy != "default":
            # Batch statistics over the global batch, not each replica's share of it:
            # the step is then the one a single device takes on the same batch.
            for layer in generator.layers + discriminator.layers:
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.synchronized = True
        gan = GAN(generator, discriminator, z_dim=p.z_dim, seed=p.seed, loss=p.loss, settings=p.loss_params,
                  ema=p.ema, g_steps=p.g_steps)
        gan.compile(d_optimizer=_optimizer(o, o.d_lr), g_optimizer=_optimizer(o, o.g_lr),
                    jit_compile=p.use_jit(precision))
    return gan


def fixed_z(p: params.TrainParams, n: int = FIXED_Z) -> np.ndarray:
    return np.random.default_rng(p.seed).standard_normal((n, p.z_dim)).astype(np.float32)


def fixed_digits(p: params.TrainParams, n: int = FIXED_Z) -> np.ndarray | None:
    """The digits asked of a conditional generator beside fixed_z: 0-9 in turn (None: unconditional)."""
    return None if p.condition == "none" else np.arange(n, dtype=np.int32) % DIGITS


def labels_for(p: params.TrainParams, ds: data.Mnist) -> np.ndarray | None:
    """The training labels a conditional GAN needs (None: unconditional); digits only."""
    if p.condition == "none":
        return None
    if data.channels_of(ds) != 1:
        raise StageError(f"train.condition: {p.condition} draws a requested digit, and prepare.dataset: stacked "
                         "draws three; use train.condition: none with Stacked MNIST")
    return ds.y_train


def fit(gan, p: params.TrainParams, x: np.ndarray, *, y: np.ndarray | None = None, samples: Path | None = None,
        state=None, run=None, start: int = 0, rows: list[dict] | None = None, logged_through: int = 0,
        verbose: int | None = None, extra_callbacks=()):
    """Train from step `start` to `p.steps` on images `x` (and their labels `y`, for a
    conditional GAN), sample grids into `samples` (None: no grids); returns the history callback. `state` (a checkpoint.TrainState) saves
    checkpoints; `run` (a tracking.Run) gets the metrics and grids; `rows` and
    `logged_through` are a resumed run's history and the last step its run holds.
    Progress: Keras' bar on a terminal, else one line per checkpoint interval
    (verbose 0: none). Raises StageError naming the step if a loss turns NaN or inf."""
    import sys

    from pipeline import callbacks as cb

    replicas = gan.distribute_strategy.num_replicas_in_sync
    if p.batch_size % (replicas * p.pack):
        raise StageError(f"train.batch_size={p.batch_size} is the global batch and must be a multiple of the "
                         f"{replicas} replicas of train.strategy: {p.strategy}"
                         + (f" times train.pack={p.pack}" if p.pack > 1 else ""))
    guard = cb.NonFiniteGuard()
    history = cb.History(p.log_every, p.oscillation_window, run, rows, logged_through)
    cbs = [guard, history]
    if samples is not None:
        cbs.append(cb.SampleGrid(fixed_z(p), p.sample_every, samples, run, p.standing_samples,
                                   digits=fixed_digits(p)))
    if state is not None:
        cbs.append(cb.Checkpoint(state, p.checkpoint_every, history, guard))
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 0
        if not verbose:
            cbs.append(cb.ProgressLine(p.checkpoint_every, p.steps))
    cbs += list(extra_callbacks)
    if start < p.steps:
        ds = dataset(x, p.batch_size, p.seed, skip_batches=start, n_critic=p.loss_params.n_critic, y=y)
        # shuffle=False: the dataset shuffles itself (keras warns that it would ignore True).
        gan.fit(ds, epochs=1, steps_per_epoch=p.steps - start, callbacks=cbs, verbose=verbose, shuffle=False)
    if guard.bad_step is not None:
        ckpt = next((c for c in cbs if isinstance(c, cb.Checkpoint)), None)
        kept = f"; the last good checkpoint (step {ckpt.last}) is kept" if ckpt is not None and ckpt.last > 0 else ""
        raise StageError(f"train: {', '.join(guard.bad_keys)} became NaN or inf at step {guard.bad_step}{kept}")
    return history


def progress_gif(samples: Path, target: Path) -> Path | None:
    from PIL import Image

    frames = [Image.open(f) for f in sorted(samples.glob("step_*.png"))]
    if not frames:
        return None
    with atomic.atomic_path(target) as tmp:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=300, loop=0)
    return target


def log_diagrams(gan, run) -> None:
    """The architecture diagrams (the seeds' save_model()); needs Graphviz, so best effort."""
    from pipeline.models import plot

    with tempfile.TemporaryDirectory() as tmp:
        try:
            for model in (gan.generator, gan.discriminator):
                plot(model, Path(tmp) / f"{model.name}.png")
        except (ImportError, OSError) as exc:
            print(f"train: architecture diagrams skipped ({exc})")
            return
        run.log_artifacts(tmp, "architecture")


def main(argv: list[str] | None = None) -> None:
    """One process of the stage. Under multi_worker every host runs it with the same
    arguments: all train (every step, every checkpoint save is collective), and only
    the chief writes the checkpoints, grids, losses.csv, the model and the run file
    and logs to MLflow; the others never touch MLflow and read the chief's
    checkpoint folder to resume (see checkpoint.TrainState)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--reports", required=True)
    ap.add_argument("--checkpoints", required=True)
    ap.add_argument("--run-file", required=True, help="the training's record: its MLflow run and params")
    args = ap.parse_args(argv)

    p = params.load("train", args.params)
    # Before any other TF op (precision_for, build): see distribution.strategy.
    strategy = distribution.strategy(p.strategy)
    task = distribution.task() if p.strategy == "multi_worker" else None
    chief = task is None or task.chief

    from pipeline.checkpoint import TrainState, fingerprint

    if not Path(args.data).is_file():
        raise StageError(f"{args.data}: prepared data not found")
    prep = params.load("prepare", args.params)
    ds = data.training_set(data.load_prepared(args.data), prep)
    y = labels_for(p, ds)
    reports, checkpoints = Path(args.reports), Path(args.checkpoints)
    precision = distribution.precision_for(p.precision)
    dataset_params = prep.dataset_flat()
    flat = {**p.flat(precision), **dataset_params, "train.n_images": len(ds.x_train)}
    gan = build(p, precision, strategy, data.channels_of(ds))
    where = f", {p.strategy} over {strategy.num_replicas_in_sync} devices" if p.strategy != "default" else ""
    if task is not None:
        where += f" of {task.describe()}"
    conditioned = f", conditioned on the digit ({p.condition})" if y is not None else ""
    print(f"train: {p.arch}/{p.loss} in {precision}{where}{conditioned}")
    state = TrainState(checkpoints, gan, fingerprint({**p.model_dump(mode="json"), **dataset_params,
                                                     "precision": precision}, args.data),
                       chief=chief)
    resumed = state.restore()
    start, rows = resumed if resumed else (0, [])
    if task is not None:
        distribution.agree(strategy, start, state.fingerprint)
    if not chief:
        print(f"train: {task.kind} {task.index} " + (f"resuming from step {start}" if resumed else "starting"))
        fit(gan, p, ds.x_train, y=y, state=state, start=start, rows=rows)
        print(f"train: {p.steps} steps of {p.arch}/{p.loss} as {task.kind} {task.index}; the chief saved the model")
        return
    tracking.abandon(state.abandoned_run_id, "Stopped before it finished; the next run had other params or "
                                             "data, so it never resumed.")

    used = tracking.Dataset(args.data, prep.dataset, data.arrays_sha256(ds))
    with tracking.training_run(flat, resume_run_id=state.run_id, data=used) as run:
        state.run_id = run.run_id
        if resumed:
            print(f"train: resuming MLflow run {run.name} ({run.run_id}) from step {start}")
            logged = tracking.last_logged_step(run.run_id, "d_loss")
        else:
            print(f"train: MLflow run {run.name} ({run.run_id})")
            log_diagrams(gan, run)
            logged = 0
        # Grids live beside the checkpoints until the end, so a resumed run keeps
        # the ones drawn before it stopped (DVC clears the stage's outputs first).
        history = fit(gan, p, ds.x_train, y=y, samples=checkpoints / "samples", state=state, run=run, start=start,
                      rows=rows, logged_through=logged)
        history.to_csv(reports / "losses.csv")
        with atomic.atomic_dir(reports / "samples") as tmp:
            for grid in sorted((checkpoints / "samples").glob("step_*.png")):
                shutil.copy2(grid, tmp / grid.name)
        gif = progress_gif(reports / "samples", reports / "progress.gif")
        if gif:
            run.log_artifact(gif, "samples")
        from pipeline.gan import float32_copy, standing_statistics

        with atomic.atomic_path(args.model) as tmp:
            standing_statistics(float32_copy(gan.sampler), p.seed, p.standing_samples).save(tmp)
        atomic.write_json(args.run_file, {**run.record(), "params": flat})
        state.mark_complete()
    print(f"train: {p.steps} steps of {p.arch}/{p.loss}; generator -> {args.model}")


if __name__ == "__main__":
    run_stage(main)
