"""MLflow at the edges: the store location, the pipeline's one run, and its
FAILED marking. The math never imports this."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
from pathlib import Path
from typing import Iterator

EXPERIMENT = "mnist-gan"


def project_root(start: Path | None = None) -> Path:
    """The repo a stage runs for, even from a `dvc exp run --temp`/queue copy."""
    start = (start or Path.cwd()).resolve()
    parts = start.parts
    for i in range(len(parts) - 2):
        if parts[i:i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return start


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root() / 'mlflow.db'}"


def _setup():
    import mlflow

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    if mlflow.get_experiment_by_name(EXPERIMENT) is None:
        location = None
        if uri.startswith("sqlite:///"):
            # Artifacts next to the database, by absolute path, not under the cwd.
            location = (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").resolve().as_uri()
        try:
            mlflow.create_experiment(EXPERIMENT, artifact_location=location)
        except mlflow.exceptions.MlflowException:
            pass  # created concurrently
    mlflow.set_experiment(EXPERIMENT)
    return mlflow


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except OSError:
        return None
    return out.stdout.strip() or None


@contextlib.contextmanager
def run(run_file: str | Path | None, new: bool = False, run_id: str | None = None) -> Iterator:
    """The pipeline's MLflow run: a new one, the one given by `run_id`, or the one
    named in `run_file`.

    Ends FINISHED on success, FAILED on any exception (Ctrl-C included)."""
    mlflow = _setup()
    if new:
        tags = {"git_commit": _git_commit(), "dvc_exp_name": os.environ.get("DVC_EXP_NAME")}
        active = mlflow.start_run(tags={k: v for k, v in tags.items() if v})
    else:
        run_id = run_id or json.loads(Path(run_file).read_text())["run_id"]
        active = mlflow.start_run(run_id=run_id)
    try:
        yield active
    except BaseException:
        mlflow.end_run(status="FAILED")
        raise
    mlflow.end_run(status="FINISHED")


def run_record(active) -> dict:
    return {"run_id": active.info.run_id, "experiment_id": active.info.experiment_id,
            "tracking_uri": tracking_uri()}


def last_logged_step(run_id: str, key: str) -> int:
    """The highest step of `key` already in the run (0 if none)."""
    from mlflow.tracking import MlflowClient

    return max((m.step for m in MlflowClient().get_metric_history(run_id, key)), default=0)
