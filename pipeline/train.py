"""Stage `train`: one GAN trained with fit() over a tf.data pipeline, resumable.

    python -m pipeline.train --params params.yaml --data data/prepared/mnist.npz \
        --model models/generator.keras --reports reports/train \
        --checkpoints models/checkpoints --run-file reports/mlflow_run.json

A run stopped at any point (Ctrl-C, SIGKILL, a crash) and started again with
the same params and data resumes from its last checkpoint, continues the same
MLflow run, and finishes at exactly `train.steps`.
"""
from __future__ import annotations

import argparse
import contextlib
import shutil
import tempfile
from pathlib import Path

import numpy as np

from pipeline import atomic, data, images, params, tracking
from pipeline.errors import StageError, run_stage

FIXED_Z = 64  # samples in the collapse watch; the grid shows the first 16


def dataset(x: np.ndarray, batch_size: int, seed: int, skip_batches: int = 0):
    """Shuffled, repeated, batched, prefetched images in [-1, 1]; `skip_batches`
    replays the order of a run that already consumed that many batches."""
    import tensorflow as tf

    if len(x) < batch_size:
        raise StageError(f"train.batch_size={batch_size} is larger than the training set ({len(x)} images)")
    ds = tf.data.Dataset.from_tensor_slices(images.from_uint8(x))
    ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True).repeat()
    ds = ds.batch(batch_size, drop_remainder=True)
    if skip_batches:
        ds = ds.skip(skip_batches)
    # Nothing here to tune, and with autotuning on, an iterator's teardown waited for
    # the tuner's next wake-up (0.6 s after 6 of 10 fit() calls of 2 s; none without).
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.prefetch(2).with_options(options)


def _optimizer(o: params.OptimizerParams, lr: float):
    import keras

    if o.name == "adam":
        return keras.optimizers.Adam(lr, beta_1=o.beta_1, beta_2=o.beta_2)
    return keras.optimizers.RMSprop(lr)


def strategy(p: params.TrainParams):
    """The tf.distribute strategy for `train.strategy`: mirrored runs data-parallel
    over every GPU, or over every CPU device where there is none."""
    import tensorflow as tf

    if p.strategy == "default":
        return tf.distribute.get_strategy()
    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    return tf.distribute.MirroredStrategy([d.name for d in devices])


def cpu_has_bf16(cpuinfo: str | None = None) -> bool:
    """Whether the CPU computes bfloat16 natively (AMX-BF16 or AVX512-BF16)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])
    return "amx_bf16" in flags or "avx512_bf16" in flags


def precision_for(setting: str) -> str:
    """`train.precision` resolved on this machine: `auto` is bfloat16 on a GPU of
    compute capability 8.0 or more (Ampere on) or a CPU with AMX-BF16 or
    AVX512-BF16, float32 elsewhere."""
    if setting != "auto":
        return setting
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        capability = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability") or (0, 0)
        return "bfloat16" if tuple(capability) >= (8, 0) else "float32"
    return "bfloat16" if cpu_has_bf16() else "float32"


@contextlib.contextmanager
def dtype_policy(precision: str):
    """Keras' global dtype policy for the models built inside, then back as it was."""
    import keras

    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16" if precision == "bfloat16" else "float32")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(before)


def build(p: params.TrainParams, precision: str | None = None):
    """The compiled GAN for these params, its variables made in `strategy(p)`'s
    scope, its layers computing in `precision` (default: `p.precision` resolved)."""
    import keras

    from pipeline.gan import GAN
    from pipeline.models import build_discriminator, build_generator

    keras.utils.set_random_seed(p.seed)
    o = p.optimizer
    precision = precision or precision_for(p.precision)
    with strategy(p).scope(), dtype_policy(precision):
        gan = GAN(build_generator(p), build_discriminator(p), p.z_dim, p.seed, loss=p.loss, ema=p.ema,
                  **p.loss_settings)
        gan.compile(d_optimizer=_optimizer(o, o.d_lr), g_optimizer=_optimizer(o, o.g_lr),
                    jit_compile=p.use_jit(precision))
    return gan


def fixed_z(p: params.TrainParams, n: int = FIXED_Z) -> np.ndarray:
    return np.random.default_rng(p.seed).standard_normal((n, p.z_dim)).astype(np.float32)


def fit(gan, p: params.TrainParams, x: np.ndarray, samples: Path, state=None, run=None,
        start: int = 0, rows: list[dict] | None = None, logged_through: int = 0, verbose: int = 1,
        extra_callbacks=()):
    """Train from step `start` to `p.steps`, sample grids into `samples`; returns the
    history callback. `run` (a tracking.Run, or None) gets the metrics and grids.
    Raises StageError naming the step if a loss turns NaN or inf."""
    from pipeline import callbacks as cb

    guard = cb.NonFiniteGuard()
    history = cb.History(p.log_every, p.oscillation_window, run, rows, logged_through)
    cbs = [guard, history, cb.SampleGrid(fixed_z(p), p.sample_every, samples, run)]
    if state is not None:
        cbs.append(cb.Checkpoint(state, p.checkpoint_every, history, guard))
    cbs += list(extra_callbacks)
    if start < p.steps:
        ds = dataset(x, p.batch_size * p.loss_params.n_critic, p.seed, skip_batches=start)
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
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--reports", required=True)
    ap.add_argument("--checkpoints", required=True)
    ap.add_argument("--run-file", required=True, help="the training's record: its MLflow run and params")
    args = ap.parse_args(argv)

    from pipeline.checkpoint import TrainState, fingerprint

    p = params.load("train", args.params)
    if not Path(args.data).is_file():
        raise StageError(f"{args.data}: prepared data not found")
    ds = data.load_prepared(args.data)
    reports, checkpoints = Path(args.reports), Path(args.checkpoints)
    precision = precision_for(p.precision)
    flat = {**p.flat(precision), "train.n_images": len(ds.x_train)}
    gan = build(p, precision)
    print(f"train: {p.arch}/{p.loss} in {precision}" + (
        f", {p.strategy} over {gan.distribute_strategy.num_replicas_in_sync} devices" if p.strategy != "default" else ""))
    state = TrainState(checkpoints, gan, fingerprint({**p.model_dump(mode="json"), "precision": precision}, args.data))
    resumed = state.restore()
    tracking.abandon(state.abandoned_run_id, "Stopped before it finished; the next run had other params or "
                                             "data, so it never resumed.")
    start, rows = resumed if resumed else (0, [])

    with tracking.training_run(flat, resume_run_id=state.run_id) as run:
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
        history = fit(gan, p, ds.x_train, checkpoints / "samples", state, run, start, rows, logged)
        history.to_csv(reports / "losses.csv")
        with atomic.atomic_dir(reports / "samples") as tmp:
            for grid in sorted((checkpoints / "samples").glob("step_*.png")):
                shutil.copy2(grid, tmp / grid.name)
        gif = progress_gif(reports / "samples", reports / "progress.gif")
        if gif:
            run.log_artifact(gif, "samples")
        from pipeline.gan import float32_copy, standing_statistics

        with atomic.atomic_path(args.model) as tmp:
            standing_statistics(float32_copy(gan.sampler), p.seed).save(tmp)
        atomic.write_json(args.run_file, {**run.record(), "params": flat})
        state.mark_complete()
    print(f"train: {p.steps} steps of {p.arch}/{p.loss}; generator -> {args.model}")


if __name__ == "__main__":
    run_stage(main)
