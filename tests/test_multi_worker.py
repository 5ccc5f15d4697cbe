"""`train.strategy: multi_worker`: two real worker processes on loopback train as
one, match a single-process run on the same global batch, track one MLflow run
from the chief, and resume together from the chief's checkpoint."""
from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from defaults import params_yaml
from test_train import losses_csv, mlflow_client, tiny_data, train_cmd

STEPS, STOP = 6, 3
# wgan-gp: five critic updates a step and the penalty's alpha, so every kind of batch
# and noise is compared; the MLP's generator has BatchNorm (synchronized across workers).


def params_text(steps: int, strategy: str) -> str:
    return params_yaml(train=dict(arch="mlp", loss="wgan-gp", steps=steps, batch_size=8, z_dim=8, virtual_labels=0,
                                  seed=5, sample_every=3, log_every=1, checkpoint_every=3, jit_compile=False, ema=0.9, standing_samples=64,
                                  strategy=strategy))
# Float32 sums in another order: one device reduces each loss, gradient and BatchNorm
# moment over the 8 rows at once, two workers over their 4 rows each and then all-reduce
# the halves (the moments as E[x^2] - E[x]^2, not TF's two-pass variance). That is ~1e-7
# relative per op, but Adam divides each gradient component by its own running size, so
# a component near zero can flip the sign of its update: such a weight then ends up to
# 2 lr (2e-4 here) from the one-device weight, and the losses move by about 1e-4
# (measured over the 6 steps: 7e-5 on d_loss and g_loss, 2e-4 on D's weights). Another
# batch or other noise misses by far more: 2e-3 at step 1, 0.3 at step 2 (the losses
# change by ~0.3 a step).
LOSS_TOL = {"rtol": 1e-3, "atol": 2e-4}
WEIGHT_ATOL = 1e-3
TIMEOUT = 150  # seconds a run of the workers may take before the test fails instead of hanging

# train.main with one callback: at GATE_STEP (its checkpoint saved) it writes GATE_FILE
# and waits to be killed; at the end it saves this worker's weights to WEIGHTS_FILE.
DRIVER = """
import os, sys, time
import keras
import numpy as np
from pipeline import errors, train

class Probe(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.step.numpy()) == int(os.environ.get("GATE_STEP", "-1")):
            open(os.environ["GATE_FILE"], "w").close()
            while True:
                time.sleep(0.05)

    def on_train_end(self, logs=None):
        m = self.model
        np.savez(os.environ["WEIGHTS_FILE"], *m.generator.get_weights(), *m.discriminator.get_weights(),
                 *m.ema_generator.get_weights())

fit = train.fit
train.fit = lambda *a, **k: fit(*a, extra_callbacks=[Probe()], **k)
errors.run_stage(train.main, sys.argv[1:])
"""


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def outputs(d: Path, name: str, checkpoints: Path | None = None) -> list[str]:
    """train's arguments with the shared data and checkpoints (default d/models/checkpoints),
    the outputs under d/name."""
    cmd = train_cmd(d)[3:]
    for flag, path in (("--model", d / name / "models/generator.keras"), ("--reports", d / name / "reports/train"),
                       ("--run-file", d / name / "reports/run.json"),
                       ("--checkpoints", checkpoints or d / "models/checkpoints")):
        cmd[cmd.index(flag) + 1] = str(path)
    return cmd


def env(d: Path, **extra) -> dict:
    return {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{d / 'mlflow.db'}", "TF_CPP_MIN_LOG_LEVEL": "2",
            "CUDA_VISIBLE_DEVICES": "", **extra}


def start(d: Path, name: str, gate: int | None = None, checkpoints: Path | None = None,
          **extra) -> subprocess.Popen:
    extra = {"WEIGHTS_FILE": str(d / f"weights-{name}.npz"), **extra}
    if gate is not None:
        extra |= {"GATE_STEP": str(gate), "GATE_FILE": str(d / f"gate-{name}")}
    return subprocess.Popen([sys.executable, "-c", DRIVER, *outputs(d, name, checkpoints)], env=env(d, **extra),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def workers(d: Path, gate: int | None = None, worker_checkpoints: Path | None = None) -> dict[str, subprocess.Popen]:
    """The chief and one worker, each with its TF_CONFIG; the worker's temp dir is d/worker-tmp."""
    chief, worker = (f"127.0.0.1:{port}" for port in free_ports(2))
    cluster = {"chief": [chief], "worker": [worker]}
    (d / "worker-tmp").mkdir(exist_ok=True)
    tf_config = {name: json.dumps({"cluster": cluster, "task": {"type": name, "index": 0}})
                 for name in ("chief", "worker")}
    return {"chief": start(d, "chief", gate, TF_CONFIG=tf_config["chief"]),
            "worker": start(d, "worker", gate, worker_checkpoints, TF_CONFIG=tf_config["worker"],
                            TMPDIR=str(d / "worker-tmp"))}


def finish(procs: dict[str, subprocess.Popen], code: int = 0) -> dict[str, str]:
    """Each process's output once all exit with `code`; kills all on a failure or after TIMEOUT."""
    deadline, out = time.monotonic() + TIMEOUT, {}
    try:
        for name, proc in procs.items():
            out[name] = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))[0]
            assert proc.returncode == code, f"{name} exited {proc.returncode}:\n{out[name][-3000:]}"
    finally:
        for proc in procs.values():
            proc.kill()
    return out


def hold(procs: dict[str, subprocess.Popen], d: Path) -> None:
    """Wait until every process holds at its gate (the checkpoint saved), then SIGKILL all."""
    deadline = time.monotonic() + TIMEOUT
    try:
        while not all((d / f"gate-{name}").exists() for name in procs):
            for name, proc in procs.items():
                assert proc.poll() is None, f"{name} ended before its gate:\n{proc.communicate()[0][-3000:]}"
            assert time.monotonic() < deadline, f"the gate was not reached in {TIMEOUT} s"
            time.sleep(0.05)
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGKILL)
            proc.wait()


def weights(path: Path) -> list[np.ndarray]:
    with np.load(path) as f:
        return [f[k] for k in sorted(f.files, key=lambda k: int(k.split("_")[1]))]


@pytest.mark.e2e
def test_two_workers_train_as_one_device_and_resume_from_the_chief(tmp_path):
    ref, d = tiny_data(tmp_path / "single"), tmp_path / "multi"
    shutil.copytree(ref, d)
    (ref / "params.yaml").write_text(params_text(STEPS, "default"))
    (d / "params.yaml").write_text(params_text(STEPS, "multi_worker"))

    # The one-device run beside the workers' first part (two cores: three processes at once).
    single = start(ref, "single")
    hold(workers(d, gate=STOP), d)  # both SIGKILLed at step STOP, its checkpoint saved
    meta = json.loads((d / "models/checkpoints/meta.json").read_text())
    assert meta["step"] == STOP and not meta["complete"]
    # A worker that cannot read the chief's checkpoints (another folder, as on a host
    # without the shared storage) would start at step 0: both refuse, neither hangs.
    refused = finish(workers(d, worker_checkpoints=d / "not-shared"), code=1)
    for name in ("chief", "worker"):
        assert f"error: train: the workers would start at different steps ([0, {STOP}])" in refused[name], \
            refused[name][-3000:]
    assert json.loads((d / "models/checkpoints/meta.json").read_text()) == meta
    out = finish(workers(d))
    finish({"single": single})

    assert "resuming MLflow run" in out["chief"] and f"from step {STOP}" in out["chief"], out["chief"][-3000:]
    assert f"worker 0 resuming from step {STOP}" in out["worker"], out["worker"][-3000:]
    assert "multi_worker over 2 devices of 2 workers (this one: the chief)" in out["chief"]
    assert "(this one: worker 0)" in out["worker"]
    meta = json.loads((d / "models/checkpoints/meta.json").read_text())
    assert meta["step"] == STEPS and meta["complete"]

    # (a) The workers hold the same weights: the same all-reduced updates from one restored checkpoint.
    w_chief, w_worker = weights(d / "weights-chief.npz"), weights(d / "weights-worker.npz")
    assert len(w_chief) == len(w_worker) > 0
    for a, b in zip(w_chief, w_worker):
        np.testing.assert_array_equal(a, b)

    # (b) Two workers of 4 rows each take the step one device takes on the same 8: same
    # images, same noise, the same losses and weights up to float32 summation order.
    rows, single_rows = losses_csv(d / "chief"), list(csv.DictReader(open(ref / "single/reports/train/losses.csv")))
    assert [int(r["step"]) for r in rows] == [int(r["step"]) for r in single_rows] == list(range(1, STEPS + 1))
    for key in ("d_loss", "g_loss", "w_estimate", "gradient_penalty"):
        np.testing.assert_allclose([float(r[key]) for r in rows], [float(r[key]) for r in single_rows],
                                   err_msg=key, **LOSS_TOL)
    for a, b in zip(w_chief, weights(ref / "weights-single.npz")):
        np.testing.assert_allclose(a, b, rtol=0, atol=WEIGHT_ATOL)

    # (c) One MLflow run, the chief's, continued after the kill and FINISHED.
    client = mlflow_client(d)
    runs = client.search_runs([client.get_experiment_by_name("mnist-gan").experiment_id])
    assert [r.info.status for r in runs] == ["FINISHED"]
    run_id = json.loads((d / "chief/reports/run.json").read_text())["run_id"]
    assert runs[0].info.run_id == run_id and runs[0].data.params["train.strategy"] == "multi_worker"
    assert sorted(m.step for m in client.get_metric_history(run_id, "d_loss")) == list(range(1, STEPS + 1))

    # (d) Only the chief wrote: its model loads; the worker left no outputs and no throwaway checkpoints.
    import keras

    g = keras.models.load_model(d / "chief/models/generator.keras", compile=False)
    assert g(np.zeros((2, 8), np.float32)).shape == (2, 28, 28, 1)
    assert sorted(p.name for p in (d / "chief/reports/train/samples").iterdir()) == ["step_000003.png",
                                                                                       "step_000006.png"]
    assert not (d / "worker").exists() and not list((d / "worker-tmp").glob("train-worker-checkpoint-*"))


@pytest.mark.parametrize("value, needle", [
    (None, "TF_CONFIG, which is not set"),
    ("{not json", "TF_CONFIG is malformed"),
    ('{"cluster": {"worker": ["h:1"]}}', "TF_CONFIG is malformed"),
    ('{"cluster": {"worker": ["h:1"]}, "task": {"type": "worker", "index": 1}}', "TF_CONFIG is malformed"),
    ('{"cluster": {"ps": ["h:1"]}, "task": {"type": "ps", "index": 0}}', "TF_CONFIG is malformed"),
])
def test_tf_config_is_required_and_checked(value, needle, monkeypatch):
    from pipeline import distribution
    from pipeline.errors import StageError

    if value is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", value)
    with pytest.raises(StageError) as err:
        distribution.task()
    assert needle in str(err.value) and '"task": {"type": "worker", "index": 0}' in str(err.value)
    assert "\n" not in str(err.value)


def test_the_chief_is_the_chief_task_else_worker_0(monkeypatch):
    from pipeline import distribution

    both = {"chief": ["a:1"], "worker": ["b:1", "c:1"]}
    workers_only = {"worker": ["b:1", "c:1"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": both, "task": {"type": "worker", "index": 1}}))
    assert distribution.task() == distribution.Task("worker", 1, both)
    assert distribution.Task("chief", 0, both).chief and not distribution.Task("worker", 0, both).chief
    assert distribution.Task("worker", 0, workers_only).chief and not distribution.Task("worker", 1, workers_only).chief


@pytest.mark.slow
def test_missing_tf_config_stops_the_stage_in_one_line(tmp_path):
    from pipeline.distribution import TF_CONFIG_HELP

    tiny_data(tmp_path)
    (tmp_path / "params.yaml").write_text(params_text(2, "multi_worker"))
    environ = {k: v for k, v in env(tmp_path).items() if k != "TF_CONFIG"}
    proc = subprocess.run(train_cmd(tmp_path), capture_output=True, text=True, env=environ, timeout=120)
    assert proc.returncode == 1
    assert [line for line in proc.stderr.splitlines() if line.startswith("error:")] == [
        f"error: train.strategy: multi_worker needs TF_CONFIG, which is not set; {TF_CONFIG_HELP}"]
    assert not (tmp_path / "mlflow.db").exists()
