"""What the MLflow UI shows of a run besides its params and metrics, on a real sqlite
store: the data it used (the Runs table's Dataset column) and, for a training run, the
system metrics sampled while it trained, through SIGTERM and a resume."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipeline import data, errors, tracking

PARAMS = {"train.arch": "mlp", "train.loss": "bce", "train.seed": 1}
SHA = "0123456789abcdef" * 4
CONTEXT = "mlflow.data.context"
SYSTEM = {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tracking")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp / 'mlflow.db'}")
        for var in ("DVC_EXP_NAME", "DVC_ROOT", "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"):
            mp.delenv(var, raising=False)
        mp.setattr(tracking, "_CLIENT", None)
        # The project root, as DVC's stages run in it.
        mp.chdir(tmp)
        from mlflow.tracking import MlflowClient

        yield SimpleNamespace(tmp=tmp, client=MlflowClient(tracking.tracking_uri()))


def inputs(store, run_id: str) -> list[tuple]:
    return [(i.dataset.name, i.dataset.digest, i.dataset.source_type, json.loads(i.dataset.source),
             {t.key: t.value for t in i.tags}) for i in store.client.get_run(run_id).inputs.dataset_inputs]


def sampler_running() -> bool:
    return any(t.name == "SystemMetricsMonitor" and t.is_alive() for t in threading.enumerate())


def system_steps(store, run_id: str) -> list[int]:
    return sorted(m.step for m in store.client.get_metric_history(run_id, "system/cpu_utilization_percentage"))


def test_training_and_result_runs_carry_the_data_they_used(store):
    # The stage's path as given (relative) or absolute under the project: the same source.
    absolute = tracking.Dataset(store.tmp / "data/prepared/mnist.npz", "mnist", SHA)
    relative = tracking.Dataset("data/prepared/mnist.npz", "mnist", SHA)
    source = {"uri": "data/prepared/mnist.npz"}
    trained = [("mnist", SHA[:8], "local", source, {CONTEXT: "training"})]

    with tracking.training_run(PARAMS, data=absolute) as t:
        pass
    assert inputs(store, t.run_id) == trained
    with tracking.training_run(PARAMS, resume_run_id=t.run_id, data=relative):
        pass
    assert inputs(store, t.run_id) == trained  # a resumed run: still one input

    training = {"run_id": t.run_id, "params": PARAMS}
    with tracking.result_run(training, {**PARAMS, "evaluate.seed": 0}, data=relative) as joined:
        pass
    # The result joins the training run, which already holds the same data.
    assert joined.run_id == t.run_id and inputs(store, t.run_id) == trained
    with tracking.result_run(training, {**PARAMS, "evaluate.seed": 1}, data=relative) as own:
        pass
    assert own.run_id != t.run_id
    assert inputs(store, own.run_id) == [("mnist", SHA[:8], "local", source, {CONTEXT: "evaluation"})]

    stacked = tracking.Dataset("data/prepared/mnist.npz", "stacked", "f" * 64)
    with tracking.training_run({**PARAMS, "prepare.dataset": "stacked"}, data=stacked) as s:
        pass
    assert inputs(store, s.run_id) == [("stacked", "f" * 8, "local", source, {CONTEXT: "training"})]


# Each process says it is ready, waits for the go file, then logs datasets no run has logged.
RACER = """
import os, sys, time
from pipeline import tracking
with tracking.training_run({"train.seed": 0}) as run:
    print("ready", flush=True)
    while not os.path.exists("go"):
        time.sleep(0.001)
    for i in range(10):
        run.log_input(tracking.Dataset("data/prepared/mnist.npz", "mnist", f"{i:08x}" * 8), "training")
    print(run.run_id)
"""


@pytest.mark.slow
def test_runs_logging_a_new_dataset_at_once_all_keep_it(tmp_path):
    """A queued grid's first trainings log the same new data at the same moment: MLflow's
    look-up-then-insert races, and no run may fail for it (CI's failure in test_grid)."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
           "PYTHONPATH": str(Path(tracking.__file__).parents[1])}
    for var in ("DVC_EXP_NAME", "DVC_ROOT"):
        env.pop(var, None)
    setup = subprocess.run([sys.executable, "-c", "from pipeline import tracking; tracking.experiment_id()"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert setup.returncode == 0, setup.stderr[-2000:]
    procs = [subprocess.Popen([sys.executable, "-c", RACER], cwd=tmp_path, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(4)]
    try:
        ready = [p.stdout.readline() for p in procs]
        (tmp_path / "go").touch()
        done = [p.communicate(timeout=120) for p in procs]
        assert ready == ["ready\n"] * 4, [err[-1500:] for _, err in done]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0] * 4, [err[-1500:] for _, err in done]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    for out, _ in done:
        logged = client.get_run(out.split()[-1]).inputs.dataset_inputs
        assert sorted(i.dataset.digest for i in logged) == [f"{i:08x}" for i in range(10)]


def test_a_training_run_samples_system_metrics_and_stops_on_sigterm_and_after_resume(store, monkeypatch):
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.1")
    with tracking.training_run(PARAMS) as run:
        time.sleep(1)
    assert not sampler_running()
    assert SYSTEM <= store.client.get_run(run.run_id).data.metrics.keys()
    first = system_steps(store, run.run_id)
    assert first == list(range(len(first))) and first

    # SIGTERM arrives in the stage as errors.Terminated: the sampler stops, the run FAILED.
    with pytest.raises(errors.Terminated):
        with tracking.training_run(PARAMS, resume_run_id=run.run_id):
            time.sleep(1)
            raise errors.Terminated()
    assert not sampler_running()
    assert store.client.get_run(run.run_id).info.status == "FAILED"
    # The resumed run's samples continue its steps.
    after = system_steps(store, run.run_id)
    assert after == list(range(len(after))) and len(after) > len(first)


def test_system_metrics_helper_takes_its_interval(store):
    with tracking.training_run(PARAMS) as run:
        pass
    store.client.update_run(run.run_id, status="RUNNING")  # the sampler stops on a run that ended
    with tracking.system_metrics(run.run_id, interval=0.1):
        time.sleep(1)
    assert not sampler_running()
    assert SYSTEM <= store.client.get_run(run.run_id).data.metrics.keys()


@pytest.mark.slow
def test_train_stage_logs_its_data_and_system_metrics(tmp_path, monkeypatch):
    """The train stage run in its project root, as DVC runs it: stopped by SIGTERM while
    the sampler samples, then resumed to the end."""
    from test_train import env_for, mlflow_client, tiny_data
    from test_train_stage import gated, resume_params, train_cmd

    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")
    tiny_data(tmp_path)
    (tmp_path / "params.yaml").write_text(resume_params(steps=30))
    proc = gated(tmp_path, 10, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path)
    try:
        time.sleep(1)  # held at step 10, while the sampler keeps sampling
        proc.terminate()
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, err[-2000:]
    client = mlflow_client(tmp_path)
    run_id = json.loads((tmp_path / "models/checkpoints/meta.json").read_text())["run_id"]
    assert client.get_run(run_id).info.status == "FAILED"
    stopped = sorted(m.step for m in client.get_metric_history(run_id, "system/cpu_utilization_percentage"))
    assert stopped

    done = subprocess.run(train_cmd(tmp_path), cwd=tmp_path, env=env_for(tmp_path), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and "resuming MLflow run" in done.stdout, done.stderr[-3000:]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    steps = sorted(m.step for m in client.get_metric_history(run_id, "system/cpu_utilization_percentage"))
    assert steps == list(range(len(steps))) and len(steps) > len(stopped)
    assert SYSTEM <= run.data.metrics.keys()
    digest = data.arrays_sha256(data.load_prepared(tmp_path / "mnist.npz"))
    [used] = run.inputs.dataset_inputs
    assert (used.dataset.name, used.dataset.digest, json.loads(used.dataset.source)) == \
        ("mnist", digest[:8], {"uri": "mnist.npz"})
    assert {t.key: t.value for t in used.tags} == {CONTEXT: "training"}


def test_a_result_run_of_its_own_gets_the_curves_but_not_the_system_metrics(store, monkeypatch):
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.1")
    with tracking.training_run(PARAMS) as t:
        t.log_metrics([("d_loss", 0.5, 1)])
        time.sleep(0.5)
    assert SYSTEM <= store.client.get_run(t.run_id).data.metrics.keys()
    training = {"run_id": t.run_id, "params": PARAMS}
    with tracking.result_run(training, {**PARAMS, "evaluate.seed": 0}):
        pass
    with tracking.result_run(training, {**PARAMS, "evaluate.seed": 1}) as own:
        pass
    # They describe the machine while it trained, not this run.
    assert list(store.client.get_run(own.run_id).data.metrics) == ["d_loss"]


def test_a_killed_exporters_registry_lock_is_broken_at_once_and_a_live_ones_is_kept(store, monkeypatch):
    """A SIGKILLed export leaves its lock behind: the next export on the same machine sees
    that the holder's process is gone and takes the lock without waiting out the lease.
    A live holder's lock is kept (the lease, not the PID, speaks for other machines)."""
    name = "lock-test-model"
    lock = name + tracking.LOCK_SUFFIX
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    here = tracking._process_space()
    assert here  # Linux: the test machine's boot and PID namespace
    monkeypatch.setattr(tracking, "LOCK_WAIT_SECONDS", 2)
    store.client.create_registered_model(lock, tags={"holder": "killed", "pid": str(dead.pid), "process_space": here})
    with tracking.registry_lock(name):
        assert store.client.get_registered_model(lock).tags["pid"] == str(os.getpid())
    assert not [m for m in store.client.search_registered_models() if m.name == lock]  # released

    for tags in ({"holder": "alive here", "pid": str(os.getppid()), "process_space": here},
                 {"holder": "elsewhere", "pid": str(dead.pid), "process_space": "another machine"}):
        store.client.create_registered_model(lock, tags=tags)
        with pytest.raises(errors.StageError, match="was held"):
            with tracking.registry_lock(name):
                pass
        assert store.client.get_registered_model(lock).tags["holder"] == tags["holder"]
        store.client.delete_registered_model(lock)
