"""Stage `train`: one GAN trained with fit() over a tf.data pipeline, resumable.

    python -m pipeline.train --params params.yaml --data data/prepared/mnist.npz \
        --model models/generator.keras --reports reports/train \
        --checkpoints models/checkpoints --run-file reports/mlflow_run.json

A run stopped at any point (Ctrl-C, SIGKILL, a crash) and started again with
the same params and data resumes from its last checkpoint, continues the same
MLflow run, and finishes at exactly `train.steps`.

With `train.strategy: multi_worker` the same command runs once per host, each
with its own TF_CONFIG (README, "Training on several machines"); the chief
alone tracks and writes, and the others only train (see `main`).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from pipeline import atomic, data, images, params, tracking
from pipeline.errors import StageError, run_stage

FIXED_Z = 64  # samples in the collapse watch; the grid shows the first 16


def dataset(x: np.ndarray, batch_size: int, seed: int, skip_batches: int = 0, n_critic: int = 1):
    """Shuffled, repeated, prefetched images in [-1, 1], in steps of shape
    (batch_size, n_critic, 28, 28, channels): column i is the i-th of n_critic
    consecutive batches, for critic update i. `skip_batches` replays the order
    of a run that already consumed that many steps.

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
    ds = ds.map(lambda rows: tf.transpose(tf.reshape(tf.gather(pixels, rows), (n_critic, batch_size, 28, 28, channels)),
                                          (1, 0, 2, 3, 4)))
    # Nothing here to tune, and with autotuning on, an iterator's teardown waited for
    # the tuner's next wake-up (0.6 s after 6 of 10 fit() calls of 2 s; none without).
    options = tf.data.Options()
    options.autotune.enabled = False
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.prefetch(2).with_options(options)


def _optimizer(o: params.OptimizerParams, lr: float):
    import keras

    if o.name == "adam":
        return keras.optimizers.Adam(lr, beta_1=o.beta_1, beta_2=o.beta_2)
    return keras.optimizers.RMSprop(lr)


TF_CONFIG_HELP = ('TF_CONFIG must hold JSON like {"cluster": {"worker": ["host1:port", "host2:port"]}, '
                  '"task": {"type": "worker", "index": 0}} (optionally a "chief": ["host:port"]), '
                  'the same cluster on every host and this host\'s task')


def tf_config(environ=os.environ) -> tuple[str, int, dict[str, list[str]]]:
    """This process's task type and index, and the cluster, from TF_CONFIG;
    a StageError saying what TF_CONFIG must hold if it is missing or malformed."""
    raw = environ.get("TF_CONFIG")
    if not raw:
        raise StageError(f"train.strategy: multi_worker needs TF_CONFIG, which is not set; {TF_CONFIG_HELP}")
    try:
        doc = json.loads(raw)
        cluster, task = doc["cluster"], doc["task"]
        kind, index = task["type"], task["index"]
        ok = (isinstance(cluster, dict) and cluster and set(cluster) <= {"chief", "worker"}
              and all(isinstance(hosts, list) and hosts and all(isinstance(h, str) and ":" in h for h in hosts)
                      for hosts in cluster.values())
              and len(cluster.get("chief", [])) <= 1 and kind in cluster
              and type(index) is int and 0 <= index < len(cluster[kind]))
    except (ValueError, TypeError, KeyError):
        ok = False
    if not ok:
        raise StageError(f"train.strategy: multi_worker: TF_CONFIG is malformed ({raw[:200]!r}); {TF_CONFIG_HELP}")
    return kind, index, cluster


def is_chief(kind: str, index: int, cluster: dict) -> bool:
    """The task that tracks and writes: the chief, or worker 0 where there is none."""
    return kind == "chief" or (kind == "worker" and index == 0 and "chief" not in cluster)


def strategy(p: params.TrainParams):
    """The tf.distribute strategy for `train.strategy`: mirrored runs data-parallel
    over every GPU, or over every CPU device where there is none; multi_worker
    over the hosts in TF_CONFIG (each of them runs this stage), all-reducing
    by ring on CPUs and NCCL on GPUs (TF's `auto`).

    Make it before any other TF op of the process: MultiWorkerMirroredStrategy
    configures the runtime's collective ops, which must happen before it starts."""
    import tensorflow as tf

    if p.strategy == "default":
        return tf.distribute.get_strategy()
    if p.strategy == "multi_worker":
        tf_config()
        return tf.distribute.MultiWorkerMirroredStrategy()
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


def build(p: params.TrainParams, precision: str | None = None, distribution=None, channels: int = 1):
    """The compiled GAN for these params and images of `channels`, its variables made in
    the scope of `distribution` (default: `strategy(p)`), its layers computing in
    `precision` (default: `p.precision` resolved)."""
    import keras

    from pipeline.gan import GAN
    from pipeline.models import build_discriminator, build_generator

    distribution = strategy(p) if distribution is None else distribution
    keras.utils.set_random_seed(p.seed)
    o = p.optimizer
    precision = precision or precision_for(p.precision)
    with distribution.scope(), dtype_policy(precision):
        generator, discriminator = build_generator(p, channels), build_discriminator(p, channels)
        if p.strategy != "default":
            # Batch statistics over the global batch, not each replica's share of it:
            # the step is then the one a single device takes on the same batch.
            for layer in generator.layers + discriminator.layers:
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.synchronized = True
        gan = GAN(generator, discriminator, p.z_dim, p.seed, loss=p.loss, ema=p.ema, **p.loss_settings)
        gan.compile(d_optimizer=_optimizer(o, o.d_lr), g_optimizer=_optimizer(o, o.g_lr),
                    jit_compile=p.use_jit(precision))
    return gan


def fixed_z(p: params.TrainParams, n: int = FIXED_Z) -> np.ndarray:
    return np.random.default_rng(p.seed).standard_normal((n, p.z_dim)).astype(np.float32)


def fit(gan, p: params.TrainParams, x: np.ndarray, samples: Path, state=None, run=None,
        start: int = 0, rows: list[dict] | None = None, logged_through: int = 0, verbose: int = 1,
        extra_callbacks=()):
    """Train from step `start` to `p.steps`, sample grids into `samples` (None: no
    grids); returns the history callback. `run` (a tracking.Run, or None) gets the
    metrics and grids. Raises StageError naming the step if a loss turns NaN or inf."""
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
        cbs.append(cb.SampleGrid(fixed_z(p), p.sample_every, samples, run))
    if state is not None:
        cbs.append(cb.Checkpoint(state, p.checkpoint_every, history, guard))
    cbs += list(extra_callbacks)
    if start < p.steps:
        ds = dataset(x, p.batch_size, p.seed, skip_batches=start, n_critic=p.loss_params.n_critic)
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


def agree(distribution, start: int, fingerprint: str) -> None:
    """Every worker starts at the same step of the same params, data and precision,
    or none trains: one that resumed alone would wait on the others' steps forever
    (a collective op, so every worker calls it at the same point)."""
    import tensorflow as tf

    mine = tf.constant([[start, int(fingerprint[:12], 16)]], tf.int64)
    every = distribution.gather(distribution.run(lambda: tf.identity(mine)), axis=0).numpy()
    if len({tuple(row) for row in every}) > 1:
        raise StageError(f"train: the workers would start at different steps ({sorted({int(r[0]) for r in every})}) "
                         "or from different params, data or precision; every worker needs the same params and data, "
                         "and all read the chief's --checkpoints (one folder every host shares)")


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
    # Before any other TF op (precision_for, build): see strategy().
    distribution = strategy(p)
    task = tf_config() if p.strategy == "multi_worker" else None
    chief = task is None or is_chief(*task)

    from pipeline.checkpoint import TrainState, fingerprint

    if not Path(args.data).is_file():
        raise StageError(f"{args.data}: prepared data not found")
    prep = params.load("prepare", args.params)
    ds = data.training_set(data.load_prepared(args.data), prep)
    reports, checkpoints = Path(args.reports), Path(args.checkpoints)
    precision = precision_for(p.precision)
    dataset_params = prep.dataset_flat()
    flat = {**p.flat(precision), **dataset_params, "train.n_images": len(ds.x_train)}
    gan = build(p, precision, distribution, data.channels_of(ds))
    where = f", {p.strategy} over {distribution.num_replicas_in_sync} devices" if p.strategy != "default" else ""
    if task is not None:
        role = "the chief" if task[0] == "chief" else f"worker {task[1]}" + (", the chief" if chief else "")
        where += f" of {sum(len(hosts) for hosts in task[2].values())} workers (this one: {role})"
    print(f"train: {p.arch}/{p.loss} in {precision}{where}")
    state = TrainState(checkpoints, gan, fingerprint({**p.model_dump(mode="json"), **dataset_params,
                                                     "precision": precision}, args.data),
                       chief=chief)
    resumed = state.restore()
    start, rows = resumed if resumed else (0, [])
    if task is not None:
        agree(distribution, start, state.fingerprint)
    if not chief:
        print(f"train: {task[0]} {task[1]} " + (f"resuming from step {start}" if resumed else "starting"))
        fit(gan, p, ds.x_train, None, state, None, start, rows)
        print(f"train: {p.steps} steps of {p.arch}/{p.loss} as {task[0]} {task[1]}; the chief saved the model")
        return
    tracking.abandon(state.abandoned_run_id, "Stopped before it finished; the next run had other params or "
                                             "data, so it never resumed.")

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
