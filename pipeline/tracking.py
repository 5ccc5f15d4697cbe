"""MLflow at one edge: the store, the runs, the registry.

Stages call the functions here and never import mlflow themselves
(`mlflow_model.py` is the logged model's own code, not a stage's). The math
works with tracking switched off: every caller passes `None` for "no run".

Runs, as the pipeline makes them (docs/experiments.md#one-mlflow-run-per-result-never-overwritten):
- `train` opens a training run: train params, per-step losses, sample grids,
  and MLflow's system metrics (CPU, memory, disk, network) while it trains.
- `evaluate` gives each pipeline result its run. The first evaluation of a
  training made in the same experiment joins that training run (one run holds
  the whole result); an evaluation that reuses cached training gets a run of
  its own, tagged `training_run_id` and carrying the training's loss curves.
  A finished result is never reopened by another result.
- `export` adds the model, its registered version and the promotion to the
  result run.

Training and result runs record the prepared data they used as an MLflow dataset
input (`Dataset`): the Runs table's Dataset column and the run's lineage show it.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from pipeline.errors import StageError
from serving.contract import CHAMPION, REGISTERED_MODEL, project_root, tracking_uri

EXPERIMENT = "mnist-gan"
REPORTS_EXPERIMENT = "mnist-gan-reports"
CURVES_EXPERIMENT = "mnist-gan-curves"  # bench/curves.py's runs: a quality curve per (recipe, seed)

# Tags every run carries; `result` marks the runs that hold a pipeline result.
TAG_COMMIT, TAG_EXP, TAG_HASH = "git_commit", "dvc_exp_name", "params_hash"
TAG_TRAINING, TAG_RESULT = "training_run_id", "result"
# The note MLflow's UI shows as a run's description.
TAG_NOTE = "mlflow.note.content"
MLFLOW_BATCH = 1000  # MLflow's per-call limit on metrics in one log_batch
# An unreachable tracking server fails the stage after this many seconds of retries
# (MNIST_GAN_TRACKING_WAIT sets another wait, e.g. for a server that restarts slowly).
PROBE_SECONDS = 20
# Between system metrics samples: shorter than MLflow's default, so that a short training
# still draws a curve; a sample costs little next to a training step.
SYSTEM_METRICS_SECONDS = 5
SYSTEM_PREFIX = "system/"  # MLflow's prefix for the system metrics' keys
# A dataset's digest as MLflow shows it: its own digests are 8 hex digits, and its store
# takes at most 36 characters (a SHA-256 has 64).
DIGEST_CHARS = 8
# Tries at logging a dataset input that another run is creating at the same moment.
DATASET_ATTEMPTS = 5


def redact(uri: str) -> str:
    """The URI without credentials (user:password@, token query strings)."""
    parts = urllib.parse.urlsplit(uri)
    if not parts.netloc:
        return uri
    host = parts.netloc.rsplit("@", 1)[-1]
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def params_hash(params: dict) -> str:
    """Eight hex digits that name a set of params."""
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:8]


def exp_name() -> str | None:
    """The DVC experiment this process runs for (DVC sets it for every `dvc exp run`)."""
    return os.environ.get("DVC_EXP_NAME") or None


def git_commit() -> str | None:
    if os.environ.get("DVC_EXP_BASELINE_REV"):
        return os.environ["DVC_EXP_BASELINE_REV"]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=project_root())
    except OSError:
        return None
    return out.stdout.strip() or None


def _probe(uri: str) -> None:
    """Fail fast, in one line, when an HTTP tracking server does not answer."""
    deadline = time.monotonic() + float(os.environ.get("MNIST_GAN_TRACKING_WAIT", PROBE_SECONDS))
    url = uri.rstrip("/") + "/health"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
                reason = f"HTTP {r.status}"
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                return  # it answers; the credentials are MLflow's to report
            reason = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            reason = str(getattr(exc, "reason", exc))
        if time.monotonic() + 2 > deadline:
            raise StageError(f"cannot reach the MLflow tracking server at {redact(uri)} "
                             f"(MLFLOW_TRACKING_URI): {reason}")
        time.sleep(2)


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """Serialize the first touch of a sqlite store: two processes creating its
    schema at once fail (a brand-new store under `dvc queue start -j 2`)."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    from filelock import FileLock

    db = Path(uri[len("sqlite:///"):])
    db.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(db) + ".lock", timeout=300):
        yield


_CLIENT = None


def client():
    """The process's MlflowClient on `tracking_uri()`, the store checked (and a
    new sqlite store's schema created) once."""
    global _CLIENT
    if _CLIENT is None:
        import mlflow
        from mlflow.tracking import MlflowClient

        # Downloads are the pipeline's own business: no progress bars in its output.
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        uri = tracking_uri()
        if urllib.parse.urlsplit(uri).scheme in ("http", "https"):
            _probe(uri)
        with _store_lock(uri):
            c = MlflowClient(uri)
            c.search_experiments(max_results=1)
        mlflow.set_tracking_uri(uri)
        _CLIENT = c
    return _CLIENT


def experiment_id(name: str = EXPERIMENT) -> str:
    c = client()
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    uri = tracking_uri()
    location = None
    if uri.startswith("sqlite:///"):
        # Artifacts next to the database, by absolute path, not under the cwd.
        location = (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").resolve().as_uri()
    with _store_lock(uri):
        exp = c.get_experiment_by_name(name)
        if exp is None:
            from mlflow.exceptions import MlflowException

            try:
                return c.create_experiment(name, artifact_location=location)
            except MlflowException:  # created by another process meanwhile (a server store)
                pass
            exp = c.get_experiment_by_name(name)
    return exp.experiment_id


@dataclass(frozen=True)
class Dataset:
    """The data a run used, as MLflow records it: `path` the prepared file, `name` the
    `prepare.dataset` value, `sha256` data.arrays_sha256 of the set the stage used."""
    path: str | Path
    name: str
    sha256: str

    def source(self) -> str:
        """The file as the project names it: relative to the project root (the cwd DVC's
        stages run in), not this machine's absolute path; a file outside it, as given."""
        path = Path(self.path)
        if path.is_absolute():
            for root in (Path.cwd(), project_root()):
                with contextlib.suppress(ValueError):
                    return path.resolve().relative_to(root.resolve()).as_posix()
        return path.as_posix()


class Run:
    """One MLflow run, written through the client (no global active run)."""

    def __init__(self, run_id: str, experiment_id: str, name: str):
        self.run_id, self.experiment_id, self.name = run_id, experiment_id, name

    def log_params(self, params: dict) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow's per-call limit on params
            client().log_batch(self.run_id, params=items[i:i + 100])

    def log_metrics(self, points: list[tuple[str, float, int]]) -> None:
        """(key, value, step) points; MLflow's per-call limit is handled here."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, int(step)) for k, v, step in points]
        for i in range(0, len(metrics), MLFLOW_BATCH):
            client().log_batch(self.run_id, metrics=metrics[i:i + MLFLOW_BATCH])

    def set_tags(self, tags: dict) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)) for k, v in tags.items() if v is not None]
        if items:
            client().log_batch(self.run_id, tags=items)

    def log_artifact(self, path: str | Path, artifact_dir: str | None = None) -> None:
        client().log_artifact(self.run_id, str(path), artifact_dir)

    def log_artifacts(self, folder: str | Path, artifact_dir: str | None = None) -> None:
        client().log_artifacts(self.run_id, str(folder), artifact_dir)

    def log_dict(self, obj: dict, artifact_file: str) -> None:
        client().log_dict(self.run_id, obj, artifact_file)

    def log_input(self, data: Dataset, context: str) -> None:
        """`data` as the run's dataset input, used for `context` ("training", "evaluation").
        MLflow keeps one input per dataset (name and digest) and run: logging the same
        data again, as a resumed or joined run does, changes nothing."""
        from mlflow.data.dataset_source_registry import get_dataset_source_from_json
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.entities import Dataset as DatasetEntity
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        # A MetaDataset: the digest is at hand, so MLflow never reads the file.
        source = get_dataset_source_from_json(json.dumps({"uri": data.source()}), "local")
        meta = MetaDataset(source, name=data.name, digest=data.sha256[:DIGEST_CHARS])
        inputs = [DatasetInput(DatasetEntity(**meta.to_dict()), [InputTag(MLFLOW_DATASET_CONTEXT, context)])]
        # MLflow looks the dataset up, then inserts it: two runs logging a new dataset at
        # once (a queued grid's first trainings) race, and the loser's insert breaks the
        # store's unique key. The dataset exists by then, so logging again finds it.
        for attempt in range(DATASET_ATTEMPTS):
            try:
                client().log_inputs(self.run_id, inputs)
                return
            except Exception as e:  # MlflowException from a store, RestException from a server
                if attempt + 1 == DATASET_ATTEMPTS or "unique constraint" not in str(e).lower():
                    raise
                time.sleep(0.05 * (attempt + 1))

    def record(self) -> dict:
        """What a run file holds: never the tracking URI's credentials."""
        return {"run_id": self.run_id, "experiment_id": self.experiment_id, "name": self.name,
                "tracking_uri": redact(tracking_uri())}

    def log_pyfunc_model(self, **kwargs) -> str:
        """`mlflow.pyfunc.log_model(**kwargs)` into this run; returns the registered version."""
        import mlflow

        client()
        with mlflow.start_run(run_id=self.run_id):
            info = mlflow.pyfunc.log_model(**kwargs)
        return str(info.registered_model_version)


@contextlib.contextmanager
def _lifecycle(run: Run, resumes: bool = False) -> Iterator[Run]:
    """FINISHED on success; FAILED on any exception, Ctrl-C and SIGTERM included. A
    tracking server lost for longer than MLflow's retries wait (a few minutes) cannot be
    told FAILED: the run stays RUNNING, and the stage stops in one line. So does an object
    store that fails under the run's files."""
    try:
        yield run
    except BaseException as exc:
        store = _lost_store(exc)
        lost = None if store else _lost_server(exc)
        status = "is FAILED"
        try:
            client().set_terminated(run.run_id, "FAILED")
        except Exception:
            if lost is None and store is None:
                raise
            status = "stays RUNNING"
        if store is not None:
            raise StageError(f"{store}; run {run.name} {status}: run the stage again once the store answers") from None
        if lost is not None:
            raise StageError(
                f"lost the MLflow tracking server at {redact(tracking_uri())} (MLFLOW_TRACKING_URI) through "
                f"MLflow's retries: {lost}; run {run.name} stays RUNNING: run the stage again once the server "
                f"answers{' (it resumes from its last checkpoint into the same run)' if resumes else ''}") from None
        raise
    client().set_terminated(run.run_id, "FINISHED")


def _lost_store(exc: BaseException) -> str | None:
    """What failed, in words, if `exc` (or its cause) says that the object store under the
    run's artifacts did: a file sent through the tracking server (its proxied artifacts) failed
    every try while the server itself answers, or boto3 could not reach the store."""
    seen = exc
    while seen is not None:
        text = " ".join(str(seen).split())
        if "/mlflow-artifacts/" in text and "Max retries exceeded" in text and _answers(tracking_uri()):
            # The server fails such a request with a 500 when its store is down, and may close the
            # connection with it, so the last try may read as either.
            store = os.environ.get("MLFLOW_S3_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL")
            why = text.rsplit("(Caused by ", 1)[-1].removesuffix(")") if "(Caused by " in text else text
            return (f"the MLflow tracking server at {redact(tracking_uri())} answers but could not store the run's "
                    f"files in its artifact store" + (f" ({redact(store)}, MLFLOW_S3_ENDPOINT_URL)" if store else "")
                    + f", through MLflow's retries: {why[:120]}")
        if type(seen).__name__ in ("EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError"):
            # boto3 straight to the store: its message names the store's URL.
            return f"the artifact store did not take the run's files: {text[:200]}"
        seen = seen.__cause__ or seen.__context__
    return None


def _answers(uri: str) -> bool:
    """Whether an HTTP tracking server says it is healthy, asked once."""
    if not uri.startswith(("http://", "https://")):
        return False
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _lost_server(exc: BaseException) -> str | None:
    """Why the tracking server did not answer, if that is what `exc` (or its cause) says."""
    import requests

    seen = exc
    while seen is not None:
        text = str(seen)
        if isinstance(seen, requests.exceptions.ConnectionError) or "Max retries exceeded" in text:
            reason = text.rsplit("Caused by ", 1)[-1] if "Caused by " in text else text
            return " ".join(reason.split())[:200]
        seen = seen.__cause__ or seen.__context__
    return None


@contextlib.contextmanager
def system_metrics(run_id: str, interval: float = SYSTEM_METRICS_SECONDS, resume: bool = False) -> Iterator[None]:
    """MLflow's system metrics (`system/cpu_utilization_percentage`, memory, disk, network;
    a GPU's where NVIDIA's NVML bindings are installed) sampled every `interval` seconds
    into the run while the block runs; `resume` continues the steps a resumed run
    already holds. MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL overrides `interval`.

    The sampler is a daemon thread, stopped (and its last samples written) however the
    block ends, so it never keeps the process alive. It needs psutil, which mlflow
    leaves optional and bentoml (pinned in pyproject.toml) requires."""
    import logging

    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    client()
    # Its start and stop notices would come between the stage's own lines.
    logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)
    monitor = SystemMetricsMonitor(run_id, sampling_interval=interval, resume_logging=resume,
                                   tracking_uri=tracking_uri())
    monitor.start()
    try:
        yield
    finally:
        monitor.finish()


@contextlib.contextmanager
def _training(run: Run, resumed: bool) -> Iterator[Run]:
    # The sampler stops before the run is marked FINISHED or FAILED.
    with _lifecycle(run, resumes=True), system_metrics(run.run_id, resume=resumed):
        yield run


def _new_run(experiment: str, name: str, tags: dict) -> Run:
    exp = experiment_id(experiment)
    created = client().create_run(exp, run_name=name, tags={k: str(v) for k, v in tags.items() if v is not None})
    return Run(created.info.run_id, exp, name)


def _base_tags(hash_: str) -> dict:
    commit = git_commit()
    return {TAG_COMMIT: commit, "mlflow.source.git.commit": commit, TAG_EXP: exp_name(), TAG_HASH: hash_}


def run_name(params: dict) -> str:
    """The DVC experiment's name, else `<arch>-<loss>-<params hash>`."""
    return exp_name() or f"{params.get('train.arch')}-{params.get('train.loss')}-{params_hash(params)}"


def training_run(params: dict, resume_run_id: str | None = None, data: Dataset | None = None):
    """The train stage's run: new (params logged), or the stopped one it resumes; `data`
    is logged as its training input, and system metrics are sampled while it is open."""
    if resume_run_id is not None:
        c = client()
        got = c.get_run(resume_run_id)
        c.update_run(resume_run_id, status="RUNNING")
        run = Run(resume_run_id, got.info.experiment_id, got.info.run_name)
    else:
        run = _new_run(EXPERIMENT, run_name(params), _base_tags(params_hash(params)))
        run.log_params(params)
    if data is not None:
        run.log_input(data, "training")
    return _training(run, resumed=resume_run_id is not None)


def abandon(run_id: str | None, why: str) -> None:
    """A stopped run that will never resume (its params changed): KILLED, not RUNNING forever."""
    if run_id is None:
        return
    c = client()
    try:
        status = c.get_run(run_id).info.status
    except Exception:  # noqa: BLE001 - gone from this store: nothing to mark
        return
    if status == "RUNNING":
        c.set_tag(run_id, TAG_NOTE, why)
        c.set_terminated(run_id, "KILLED")


def result_run(training: dict, params: dict, data: Dataset | None = None):
    """The run of one pipeline result (all params given here are logged; `data` as its
    evaluation input).

    Joins the training run when that training was made for this same
    experiment and holds no result yet; otherwise a new run, linked to it by
    the `training_run_id` tag, with its per-step curves copied in. A joined run
    already holds the same data as its training input, and MLflow keeps that one."""
    c = client()
    train_id = training["run_id"]
    trained = c.get_run(train_id)
    own = {k: v for k, v in params.items() if k not in trained.data.params}
    same_params = all(trained.data.params.get(k) == str(v) for k, v in params.items() if k in trained.data.params)
    joinable = (TAG_RESULT not in trained.data.tags and same_params
                and trained.data.tags.get(TAG_EXP) == exp_name() and trained.info.status != "RUNNING")
    hash_ = params_hash(params)
    tags = {**_base_tags(hash_), TAG_TRAINING: train_id, TAG_RESULT: "true"}
    if joinable:
        name = run_name(params)
        c.update_run(train_id, status="RUNNING", name=name)
        run = Run(train_id, trained.info.experiment_id, name)
        run.set_tags(tags)
        run.log_params(own)
        if data is not None:
            run.log_input(data, "evaluation")
        return _lifecycle(run)
    run = _new_run(EXPERIMENT, run_name(params), tags)
    link = f"#/experiments/{trained.info.experiment_id}/runs/{train_id}"
    run.set_tags({TAG_NOTE: f"Evaluation that reuses the training of run [{trained.info.run_name}]({link}); "
                            "its per-step curves are copied here."})
    run.log_params(params)
    if data is not None:
        run.log_input(data, "evaluation")
    _copy_curves(train_id, run)
    return _lifecycle(run)


def _copy_curves(source_id: str, target: Run) -> None:
    """The training's per-step curves (step >= 1; a result's own metrics sit at step 0)
    and its sample grids, into a result run that reuses that training. Not its system
    metrics: they describe the machine while it trained, not this run."""
    import tempfile

    c = client()
    keys = [k for k in c.get_run(source_id).data.metrics if not k.startswith(SYSTEM_PREFIX)]
    target.log_metrics([(k, m.value, m.step) for k in keys for m in c.get_metric_history(source_id, k) if m.step > 0])
    if any(a.path == "samples" for a in c.list_artifacts(source_id)):
        with tempfile.TemporaryDirectory() as tmp:
            target.log_artifacts(c.download_artifacts(source_id, "samples", tmp), "samples")


def reopen(record: dict):
    """The run a run file names, for a later stage of the same result."""
    c = client()
    got = c.get_run(record["run_id"])
    c.update_run(record["run_id"], status="RUNNING")
    return _lifecycle(Run(record["run_id"], got.info.experiment_id, got.info.run_name))


def last_logged_step(run_id: str, key: str) -> int:
    """The highest step of `key` already in the run (0 if none)."""
    return max((m.step for m in client().get_metric_history(run_id, key)), default=0)


# The registry ----------------------------------------------------------------------------------

# The promotion lock of registered model NAME is a registered model NAME + LOCK_SUFFIX.
LOCK_SUFFIX = ".promotion-lock"
# A lock older than this is a dead holder's (a promotion takes seconds) and is broken.
LOCK_LEASE_SECONDS = 300
LOCK_WAIT_SECONDS = 600


def _process_space() -> str | None:
    """This boot of this machine and its process namespace, where Linux tells them: two
    processes that share it see the same PIDs, so one can tell whether the other's
    PID is still alive. None elsewhere."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return None


def _holder_gone(tags: dict) -> bool:
    """Whether a lock's holder was a process of this process space that no longer runs:
    a SIGKILLed export releases nothing, and its lock need not wait out the lease."""
    space, pid = tags.get("process_space"), tags.get("pid", "")
    if space is None or space != _process_space() or not pid.isdigit():
        return False  # another machine's, container's or boot's: only the lease tells
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, another user's
    return False


@contextlib.contextmanager
def registry_lock(name: str = REGISTERED_MODEL) -> Iterator[None]:
    """One promotion of registered model `name` at a time, among every process on every
    machine that uses this tracking store: the lock is a registered model that exists
    while it is held. Creating it is atomic (the store's unique key on names), so
    exactly one of any number of exporters creates it; the others wait."""
    import socket
    import uuid

    from mlflow.exceptions import MlflowException

    c, lock = client(), name + LOCK_SUFFIX
    holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    while True:
        try:
            tags = {"holder": holder, "pid": str(os.getpid()), "process_space": _process_space() or ""}
            c.create_registered_model(lock, tags=tags, description=(
                f"Held while an export decides the champion of {name}; deleted when it is done. "
                f"One whose process is gone, or one older than {LOCK_LEASE_SECONDS} s, belonged to an export "
                "that died, and the next export breaks it."))
            break
        except MlflowException as e:
            # Held; or released while the store told us so (it then finds no such model).
            if e.error_code not in ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST"):
                raise
        _break_if_stale(lock)
        if time.monotonic() > deadline:
            raise StageError(f"the registry lock {lock!r} on {redact(tracking_uri())} was held for "
                             f"{LOCK_WAIT_SECONDS} s; if no export is running, delete that registered model")
        time.sleep(0.1 + 0.2 * (uuid.uuid4().int % 100) / 100)  # jittered, so waiters do not march in step
    try:
        yield
    finally:
        _release(lock, holder)


def _break_if_stale(lock: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        held = client().get_registered_model(lock)
    except MlflowException:
        return  # released meanwhile
    age = time.time() - held.creation_timestamp / 1000
    gone = _holder_gone(held.tags)
    if gone or age > LOCK_LEASE_SECONDS:
        why = "its process is gone" if gone else f"held {age:.0f} s"
        print(f"export: breaking the registry lock {lock!r} of {held.tags.get('holder')}: {why}")
        with contextlib.suppress(MlflowException):
            client().delete_registered_model(lock)


def _release(lock: str, holder: str) -> None:
    from mlflow.exceptions import MlflowException

    with contextlib.suppress(MlflowException):
        if client().get_registered_model(lock).tags.get("holder") == holder:  # not one that broke ours
            client().delete_registered_model(lock)


def tag_version(version: str, tags: dict, name: str = REGISTERED_MODEL) -> None:
    """Tags on version `version` of registered model `name` (a kind's, contract.registered_model)."""
    for k, v in tags.items():
        client().set_model_version_tag(name, version, k, str(v))


def version_tags(version: str, name: str = REGISTERED_MODEL) -> dict:
    return dict(client().get_model_version(name, version).tags)


def registered_from(run_id: str, tag: str, value: str, name: str = REGISTERED_MODEL) -> str | None:
    """The version of `name` that run `run_id` registered with tag `tag` = `value`, if one did."""
    found = [v for v in client().search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
             if v.tags.get(tag) == value]
    return str(min(int(v.version) for v in found)) if found else None


def champion(name: str = REGISTERED_MODEL) -> dict | None:
    """The champion of registered model `name`: its version number and tags, or None when there is none."""
    from mlflow.exceptions import MlflowException

    try:
        mv = client().get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None
    return {"version": str(mv.version), "run_id": mv.run_id, "tags": dict(mv.tags)}


def set_champion(version: str, name: str = REGISTERED_MODEL) -> None:
    client().set_registered_model_alias(name, CHAMPION, version)


# Reading runs back (the comparison report) -----------------------------------------------------

def _as_dict(r) -> dict:
    return {"run_id": r.info.run_id, "name": r.info.run_name, "status": r.info.status,
            "experiment_id": r.info.experiment_id, "start_time": r.info.start_time, "end_time": r.info.end_time,
            "params": dict(r.data.params), "metrics": dict(r.data.metrics), "tags": dict(r.data.tags)}


def _search(experiment: str, filter_string: str) -> list[dict]:
    """Every run of `experiment` that `filter_string` selects, oldest first."""
    c = client()
    exp = c.get_experiment_by_name(experiment)
    found, token = [], None
    while exp is not None:
        page = c.search_runs([exp.experiment_id], filter_string=filter_string,
                             order_by=["attributes.start_time ASC"], max_results=1000, page_token=token)
        found += [_as_dict(r) for r in page]
        token = page.token
        if not token:
            break
    return found


def result_runs(selectors: list[str] | None = None) -> list[dict]:
    """The experiment's FINISHED result runs, oldest first; or the runs named
    (by run name or id) in `selectors`, in that order (of several runs with one
    name, the newest FINISHED one)."""
    found = _search(EXPERIMENT, f"tags.{TAG_RESULT} = 'true'")
    if not selectors:
        return [r for r in found if r["status"] == "FINISHED"]
    out = []
    for s in selectors:
        match = [r for r in found if s in (r["run_id"], r["name"])]
        if not match:
            raise StageError(f"--runs: no result run named or with id {s!r} in experiment {EXPERIMENT}")
        finished = [r for r in match if r["status"] == "FINISHED"]
        out.append((finished or match)[-1])
    return out


def curve_run(name: str, params: dict, tags: dict):
    """A quality curve's run, in an experiment of its own: `params` logged; FINISHED once
    the block ends, FAILED on any exception, Ctrl-C and SIGTERM included."""
    run = _new_run(CURVES_EXPERIMENT, name, {**_base_tags(params_hash(params)), **tags})
    run.log_params(params)
    return _lifecycle(run)


def curve_runs() -> list[dict]:
    """The FINISHED curve runs, oldest first."""
    return _search(CURVES_EXPERIMENT, "attributes.status = 'FINISHED'")


def metric_history(run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client().get_metric_history(run_id, key))


def last_logged_time(run_id: str, key: str) -> int | None:
    """When (ms since the epoch) the run's last point of `key` was logged; None without one."""
    history = client().get_metric_history(run_id, key)
    return max((m.timestamp for m in history), default=None)


def list_artifacts(run_id: str, path: str | None = None) -> list[str]:
    return [a.path for a in client().list_artifacts(run_id, path)]


def download(run_id: str, path: str, dst: str | Path) -> Path:
    return Path(client().download_artifacts(run_id, path, str(dst)))


def report_run(name: str, tags: dict):
    """A run of its own (in the reports experiment) for a comparison report."""
    return _lifecycle(_new_run(REPORTS_EXPERIMENT, name, {**_base_tags(None), **tags}))


def ui_url(base: str = "http://127.0.0.1:5000") -> str:
    """The MLflow UI page that lists the experiment's training runs (MLflow 3
    otherwise opens its GenAI overview, which shows none)."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id(EXPERIMENT)}/runs?workflowType=machine_learning"


if __name__ == "__main__":  # `python -m pipeline.tracking url [BASE]`: what `make ui` prints
    import sys

    if sys.argv[1:2] == ["url"]:
        print(ui_url(*sys.argv[2:3]))
