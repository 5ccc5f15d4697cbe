"""The train stage as DVC runs it, in its own process: on two devices, failing,
deterministic, and stopped by a signal or a kill, then resumed exactly."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from defaults import params_yaml
from test_train import env_for, losses_csv, mlflow_client, run_train, tiny_data, train_cmd

pytestmark = pytest.mark.slow


TWO_CPUS = """
import sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from pipeline import train
train.main(sys.argv[1:])
"""


@pytest.mark.parametrize("arch,loss", [("mlp", "wgan-gp"), ("dcgan", "bce")])
def test_mirrored_strategy_trains_on_two_cpu_devices(tmp_path, arch, loss):
    tiny_data(tmp_path)
    (tmp_path / "params.yaml").write_text(params_yaml(train=dict(
        arch=arch, loss=loss, strategy="mirrored", steps=4, batch_size=8, z_dim=8, virtual_labels=0, sample_every=2,
        log_every=1, checkpoint_every=2, standing_samples=64)))
    done = subprocess.run([sys.executable, "-c", TWO_CPUS, *train_cmd(tmp_path)[3:]],
                          capture_output=True, text=True, env=env_for(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "mirrored over 2 devices" in done.stdout
    rows = losses_csv(tmp_path)
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert all(np.isfinite(float(r[k])) for r in rows for k in ("d_loss", "g_loss", "d_grad_norm"))
    run_id = json.loads((tmp_path / "reports/run.json").read_text())["run_id"]
    client = mlflow_client(tmp_path)
    assert client.get_run(run_id).data.params["train.strategy"] == "mirrored"
    assert [m.step for m in client.get_metric_history(run_id, "g_loss")] == [1, 2, 3, 4]
    import keras

    g = keras.models.load_model(tmp_path / "models/generator.keras", compile=False)
    out = g(np.zeros((2, 8), np.float32)).numpy()
    assert out.shape == (2, 28, 28, 1) and np.all(np.abs(out) <= 1)


def test_failure_marks_mlflow_run_failed_and_writes_nothing(tmp_path):
    tiny_data(tmp_path, n=10)
    proc = run_train(tmp_path, params_yaml(train={"batch_size": 32, "steps": 2}))
    assert proc.returncode == 1
    assert "train.batch_size=32 is larger than the training set (10 images)" in proc.stderr
    assert not (tmp_path / "models/generator.keras").exists() and not (tmp_path / "reports/run.json").exists()
    client = mlflow_client(tmp_path)
    runs = client.search_runs([client.get_experiment_by_name("mnist-gan").experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]


def resume_params(precision: str = "float32", steps: int = 120) -> str:
    return params_yaml(train=dict(arch="mlp", steps=steps, batch_size=8, z_dim=16, virtual_labels=0, seed=3,
                                  sample_every=40, log_every=7, checkpoint_every=10, jit_compile=False, ema=0.99, standing_samples=64,
                                  precision=precision))


def straight_run(tmp_path_factory, precision: str) -> Path:
    d = tiny_data(tmp_path_factory.mktemp(f"straight-{precision}"))
    proc = run_train(d, resume_params(precision))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return d


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    return straight_run(tmp_path_factory, "float32")


# Each precision is stopped first by one of the two signals people send: Ctrl-C (SIGINT)
# and `kill` or `dvc queue kill` (SIGTERM). (precision, signal, exit status, message word)
STOPS = [("float32", signal.SIGINT, 130, "interrupted"), ("bfloat16", signal.SIGTERM, 143, "terminated (SIGTERM)")]


@pytest.fixture(scope="module", params=STOPS, ids=[p for p, *_ in STOPS])
def straight(request, tmp_path_factory):
    """An uninterrupted run in each precision, with the signal its resumed twin is
    stopped by: (precision, its folder, signal, exit status, message word)."""
    precision, *stop = request.param
    d = request.getfixturevalue("uninterrupted") if precision == "float32" else \
        straight_run(tmp_path_factory, precision)
    return (precision, d, *stop)


# train.main with one more callback that, at step GATE_STEP, writes GATE_FILE and
# then waits for a signal: the tests stop the run at a known step on any machine,
# however fast, instead of racing it.
GATED = """
import os, sys, time
import keras
from pipeline import errors, train

class Gate(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.step.numpy()) == int(os.environ["GATE_STEP"]):
            open(os.environ["GATE_FILE"], "w").close()
            while True:
                time.sleep(0.05)

fit = train.fit
train.fit = lambda *a, **k: fit(*a, extra_callbacks=[Gate()], **k)
errors.run_stage(train.main, sys.argv[1:])
"""


_CHILDREN: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _end_children():
    """Whatever a test started and left running (it failed midway) is killed."""
    yield
    while _CHILDREN:
        proc = _CHILDREN.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _signals_as_in_a_terminal():
    # A shell without job control starts background jobs with SIGINT ignored, and Python
    # keeps an ignored SIGINT ignored: the child gets the handling the tests send signals to.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def gated(d: Path, step: int, **popen):
    """train.main in a process that holds at `step` (its checkpoint written) until signalled."""
    gate = d / f"gate-{step}"
    gate.unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", GATED, *train_cmd(d)[3:]],
                            env={**env_for(d), "GATE_STEP": str(step), "GATE_FILE": str(gate)}, text=True,
                            preexec_fn=_signals_as_in_a_terminal, **popen)
    _CHILDREN.append(proc)
    deadline = time.monotonic() + 300
    while not gate.exists():
        assert proc.poll() is None, f"training ended before step {step}: {proc.communicate()}"
        assert time.monotonic() < deadline, f"step {step} not reached in 300 s"
        time.sleep(0.05)
    return proc


def checkpoint_meta(d: Path) -> dict:
    return json.loads((d / "models/checkpoints/meta.json").read_text())


def test_interrupt_and_kill_then_resume_exactly(tmp_path, straight):
    """Stopped by a signal, then killed, then resumed: the numbers of a run that never
    stopped, which also proves that the same seed gives the same losses."""
    import shutil

    precision, uninterrupted, sig, code, word = straight
    d = tmp_path
    shutil.copy(uninterrupted / "mnist.npz", d / "mnist.npz")
    (d / "params.yaml").write_text(resume_params(precision))

    # A signal at step 10: a clean stop, the checkpoint kept, the run FAILED, no outputs.
    proc = gated(d, 10, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-2000:]
    assert f"error: {word}; run the stage again (it resumes from its last checkpoint)" in err
    meta = checkpoint_meta(d)
    assert meta["step"] == 10 and not meta["complete"]
    run_id = meta["run_id"]
    assert mlflow_client(d).get_run(run_id).info.status == "FAILED"
    assert not (d / "models/generator.keras").exists() and not (d / "reports/run.json").exists()

    # SIGKILL at step 50 (after resuming from 10): no chance to clean up at all.
    proc = gated(d, 50, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc.kill()
    proc.wait()
    assert checkpoint_meta(d)["step"] == 50

    done = subprocess.run(train_cmd(d), env=env_for(d), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming MLflow run" in done.stdout and "from step 50" in done.stdout
    assert f"in {precision}" in done.stdout

    rows = losses_csv(d)
    assert [int(r["step"]) for r in rows] == list(range(1, 121))
    # Exactly the numbers of a run that never stopped.
    assert [(r["d_loss"], r["g_loss"]) for r in rows] == \
        [(r["d_loss"], r["g_loss"]) for r in losses_csv(uninterrupted)]

    client = mlflow_client(d)
    record = json.loads((d / "reports/run.json").read_text())
    assert record["run_id"] == run_id and record["params"]["train.steps"] == 120
    assert record["params"]["train.precision"] == precision
    assert client.get_run(run_id).info.status == "FINISHED"
    for key in ("d_loss", "g_loss"):
        assert sorted(m.step for m in client.get_metric_history(run_id, key)) == list(range(1, 121))
    assert len(client.search_runs([client.get_experiment_by_name("mnist-gan").experiment_id])) == 1
    grids = sorted(p.name for p in (d / "reports/train/samples").iterdir())
    assert grids == ["step_000040.png", "step_000080.png", "step_000120.png"]
    # The saved generator (the weight average, restored with the checkpoint) is the same too.
    import keras

    resumed, once = (keras.models.load_model(x / "models/generator.keras", compile=False) for x in (d, uninterrupted))
    assert all(np.array_equal(a, b) for a, b in zip(resumed.get_weights(), once.get_weights()))
    # Saved to serve in float32, whatever the training's precision.
    assert {layer.dtype_policy.name for layer in resumed.layers} == {"float32"}
    assert resumed(np.zeros((1, 16), np.float32)).dtype == "float32"

    if precision != "float32":
        return  # what follows does not depend on the precision
    # Finished: the same command starts a fresh run (in a new MLflow run).
    again = subprocess.run(train_cmd(d), env=env_for(d), capture_output=True, text=True)
    assert again.returncode == 0 and "resuming" not in again.stdout
    assert json.loads((d / "reports/run.json").read_text())["run_id"] != run_id


def test_killed_run_whose_params_change_is_not_left_running(tmp_path, uninterrupted):
    import shutil

    shutil.copy(uninterrupted / "mnist.npz", tmp_path / "mnist.npz")
    (tmp_path / "params.yaml").write_text(resume_params())
    proc = gated(tmp_path, 10, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc.kill()
    proc.wait()
    stopped = checkpoint_meta(tmp_path)["run_id"]
    client = mlflow_client(tmp_path)
    assert client.get_run(stopped).info.status == "RUNNING"  # SIGKILL left no chance to say otherwise

    proc = run_train(tmp_path, resume_params(steps=5))
    assert proc.returncode == 0 and "resuming" not in proc.stdout, proc.stderr[-2000:]
    old = client.get_run(stopped)
    assert old.info.status == "KILLED" and "never resumed" in old.data.tags["mlflow.note.content"]
    new = json.loads((tmp_path / "reports/run.json").read_text())["run_id"]
    assert new != stopped and client.get_run(new).info.status == "FINISHED"
    assert [int(r["step"]) for r in losses_csv(tmp_path)] == [1, 2, 3, 4, 5]  # started fresh


def test_unreachable_tracking_server_stops_the_stage_in_one_line(tmp_path):
    """A tracking URI on a closed port: one line naming MLFLOW_TRACKING_URI, no
    traceback, no credentials, nothing trained (the probe bounds the wait)."""
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tiny_data(tmp_path)
    (tmp_path / "params.yaml").write_text(params_yaml(train={"steps": 2, "batch_size": 8}))
    env = {**env_for(tmp_path), "MLFLOW_TRACKING_URI": f"http://alice:s3cret@127.0.0.1:{port}",
           "MNIST_GAN_TRACKING_WAIT": "3"}
    proc = subprocess.run(train_cmd(tmp_path), capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: cannot reach the MLflow tracking server at http://127.0.0.1:{port} "
                      f"(MLFLOW_TRACKING_URI): {errors[0].rsplit(': ', 1)[-1]}"], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "s3cret" not in proc.stderr + proc.stdout
    assert not (tmp_path / "models/generator.keras").exists()
