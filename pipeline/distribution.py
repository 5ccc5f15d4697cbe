"""Where training runs: the tf.distribute strategy of `train.strategy`, this host's
task in a multi-worker cluster (TF_CONFIG, read by TensorFlow's cluster
resolver), and the precision the hardware computes fastest (`train.precision`)."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import StageError

TF_CONFIG_HELP = ('TF_CONFIG must hold JSON like {"cluster": {"worker": ["host1:port", "host2:port"]}, '
                  '"task": {"type": "worker", "index": 0}} (optionally a "chief": ["host:port"]), '
                  'the same cluster on every host and this host\'s task')
JOBS = ("chief", "worker")


@dataclass(frozen=True)
class Task:
    """This process's place in the cluster TF_CONFIG describes."""
    kind: str                       # chief or worker
    index: int
    cluster: dict[str, list[str]]   # job -> host:port addresses

    @property
    def chief(self) -> bool:
        """The task that tracks and writes: the chief, or worker 0 where there is none."""
        return self.kind == "chief" or (self.kind == "worker" and self.index == 0 and "chief" not in self.cluster)

    @property
    def workers(self) -> int:
        return sum(len(hosts) for hosts in self.cluster.values())

    def describe(self) -> str:
        role = "the chief" if self.kind == "chief" else f"worker {self.index}" + (", the chief" if self.chief else "")
        return f"{self.workers} workers (this one: {role})"


def task() -> Task:
    """This process's task and cluster from TF_CONFIG, through TensorFlow's cluster
    resolver; a StageError saying what TF_CONFIG must hold if it is missing, malformed,
    or names a job other than chief and worker or a task the cluster lacks."""
    import os

    import tensorflow as tf

    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise StageError(f"train.strategy: multi_worker needs TF_CONFIG, which is not set; {TF_CONFIG_HELP}")
    try:
        resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
        cluster = resolver.cluster_spec().as_dict()
        kind, index = resolver.task_type, resolver.task_id
    except (ValueError, TypeError, KeyError, AttributeError):
        cluster, kind, index = {}, None, None
    ok = (isinstance(cluster, dict) and cluster and set(cluster) <= set(JOBS)
          and all(isinstance(hosts, list) and hosts and all(isinstance(h, str) and ":" in h for h in hosts)
                  for hosts in cluster.values())
          and len(cluster.get("chief", [])) <= 1 and kind in cluster
          and type(index) is int and 0 <= index < len(cluster[kind]))
    if not ok:
        raise StageError(f"train.strategy: multi_worker: TF_CONFIG is malformed ({raw[:200]!r}); {TF_CONFIG_HELP}")
    return Task(kind, index, cluster)


def strategy(setting: str):
    """The tf.distribute strategy for `train.strategy`: mirrored runs data-parallel
    over every GPU, or over every CPU device where there is none; multi_worker
    over the hosts in TF_CONFIG (each of them runs the stage), all-reducing by
    ring on CPUs and NCCL on GPUs (TF's `auto`).

    Make it before any other TF op of the process: MultiWorkerMirroredStrategy
    configures the runtime's collective ops, which must happen before it starts."""
    import tensorflow as tf

    if setting == "default":
        return tf.distribute.get_strategy()
    if setting == "multi_worker":
        task()
        return tf.distribute.MultiWorkerMirroredStrategy()
    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    return tf.distribute.MirroredStrategy([d.name for d in devices])


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
