"""Team mode on real engines (ops/stack.py): PostgreSQL, an S3-compatible store
(moto's server) and `mlflow server` on loopback. The pipeline runs against the
server; the run is read back from PostgreSQL, its artifacts from the bucket, the
champion from a second process. Then DVC remotes, S3 on the same store and a
folder, do the round trip to a fresh clone."""
from __future__ import annotations

import contextlib
import filecmp
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from e2e_util import BIN, ROOT, copy_project, env_for, free_port, set_params

pytestmark = [pytest.mark.e2e, pytest.mark.postgresql]
STEPS = 4
# Permissive bounds, so that a four-step generator of one digit passes the gate and
# becomes the champion: this test is about where things are stored, not their quality.
PASSING = {"mode_min_share": 1e-6, "kl_max": 1e9, "diversity_min": 1e-6, "duplicate_excess_max": 1.0,
           "copy_excess_max": 1.0, "copying_z_min": -1e9, "classifier_score_ratio_min": 1e-6,
           "precision_min": 0.0, "recall_min": 0.0, "fcd_max": 1e12}


def _stack(env: dict, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(ROOT / "ops/stack.py"), *args], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("team")
    env = dict(os.environ, STACK_DIR=str(tmp / "stack"), STACK_PG_PORT=str(free_port()),
               STACK_S3_PORT=str(free_port()), STACK_MLFLOW_PORT=str(free_port()))
    up = _stack(env, "up")
    state = json.loads((tmp / "stack" / "stack.json").read_text())
    yield tmp, env, state, up.stdout
    _stack(env, "down", "--purge")


@pytest.fixture(scope="module")
def team_run(stack):
    tmp, stack_env, state, _ = stack
    exports = _stack(stack_env, "env").stdout
    client_env = dict(line.removeprefix("export ").split("=", 1) for line in exports.splitlines())
    project = copy_project(tmp / "project")
    set_params(project, prepare={"limit": 200, "digits": [1]},
               train={"steps": STEPS, "batch_size": 32, "sample_every": 2, "log_every": 2, "z_dim": 16,
                      "virtual_labels": 8,
                      "checkpoint_every": 2, "jit_compile": False},
               judge={"epochs": 1, "width": 4, "feature_dim": 16},
               evaluate={"num_samples": 64, **PASSING})
    env = dict(env_for(tmp), **client_env)
    subprocess.run(["git", "add", "-A"], cwd=project, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tiny"], cwd=project, check=True)
    proc = subprocess.run(["dvc", "repro"], cwd=project, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return project, env, state


def test_up_says_what_it_started_and_is_idempotent(stack):
    _, env, state, said = stack
    assert f"PostgreSQL on 127.0.0.1:{state['pg_port']}" in said
    assert f"object store (moto) at {state['s3_url']}" in said and f"mlflow server at {state['mlflow_url']}" in said
    again = _stack(env, "up").stdout
    assert "already running" in again and again.count("already running") == 3, again
    assert oct((Path(env["STACK_DIR"]) / "stack.json").stat().st_mode & 0o777) == "0o600"
    # The database password reaches mlflow server by environment, never its command line.
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert state["pg_password"] not in ps


def test_pipeline_run_lands_in_postgres_and_the_bucket(team_run):
    import boto3
    import psycopg2

    project, env, state = team_run
    run_id = json.loads((project / "reports/mlflow_run.json").read_text())["run_id"]
    assert json.loads((project / "reports/mlflow_run.json").read_text())["tracking_uri"] == state["mlflow_url"]
    conn = psycopg2.connect(host="127.0.0.1", port=state["pg_port"], user="mlflow", password=state["pg_password"],
                            dbname="mlflow")
    with conn, conn.cursor() as cur:
        cur.execute("SELECT status, artifact_uri FROM runs WHERE run_uuid = %s", (run_id,))
        status, artifact_uri = cur.fetchone()
        cur.execute("SELECT count(*) FROM metrics WHERE run_uuid = %s AND key = 'g_loss'", (run_id,))
        g_loss_points = cur.fetchone()[0]
        cur.execute("SELECT version FROM model_versions WHERE name = 'mnist-gan-generator' AND run_id = %s", (run_id,))
        version = cur.fetchone()[0]
        cur.execute("SELECT version FROM registered_model_aliases WHERE name = 'mnist-gan-generator' AND alias = 'champion'")
        champion = cur.fetchone()[0]
    conn.close()
    assert status == "FINISHED" and artifact_uri.startswith("mlflow-artifacts:/")
    assert g_loss_points == STEPS and champion == version

    s3 = boto3.client("s3", endpoint_url=state["s3_url"], aws_access_key_id="k", aws_secret_access_key="s",
                      region_name="us-east-1")
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket="mnist-gan", Prefix="mlflow/")
            for o in page.get("Contents", [])]
    mine = [k for k in keys if f"/{run_id}/" in k]
    assert any(k.endswith("model_card.json") for k in mine), keys[:20]
    assert any(k.endswith(".png") and "/samples/" in k for k in mine), mine
    assert any(k.endswith("eval/verdict.json") for k in mine), mine
    # The logged model's files: a registered version's source.
    assert any(k.endswith("MLmodel") for k in keys), keys[:20]
    assert not (project / "mlruns").exists() and not (project / "mlartifacts").exists()


LOAD = """
import numpy as np, mlflow
m = mlflow.pyfunc.load_model("models:/mnist-gan-generator@champion")
z = np.random.default_rng(0).standard_normal((3, 16)).astype("float32")
out = np.asarray(m.predict(z))
print(out.shape, out.dtype, float(out.min()) >= -1.0, float(out.max()) <= 1.0)
"""


def test_champion_loads_in_a_second_process(team_run, tmp_path):
    project, env, state = team_run
    # Only the server's URL: no S3 credentials, no project files.
    clean = {k: v for k, v in env.items() if not k.startswith(("AWS_", "MLFLOW_S3"))}
    proc = subprocess.run([sys.executable, "-c", LOAD], cwd=tmp_path, env=dict(clean, PYTHONPATH=""),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "(3, 28, 28, 1) float32 True True", proc.stdout


# One exporter's promotion (export.promote, as the export stage calls it) in each round:
# it registers its version, says ready, waits for the round's go file, then promotes.
PROMOTER = """
import json, os, sys, time
from mlflow.exceptions import MlflowException
from pipeline import tracking
from pipeline.export import promote

go, rounds = sys.argv[1], json.loads(sys.argv[2])
c = tracking.client()
for i, (name, fcd, gate) in enumerate(rounds):
    try:
        c.create_registered_model(name)
    except MlflowException:
        pass  # another exporter made it first
    version = c.create_model_version(name, f"s3://mnist-gan/race/{name}/{fcd}").version
    print("ready", flush=True)
    while not os.path.exists(f"{go}-{i}"):
        time.sleep(0.001)
    challenger = {"version": version, "quality_gate_passed": gate, "reasons": [] if gate else ["fcd too high"],
                  "eval_protocol": "p", "fcd": fcd, "classifier_score_ratio": 0.9}
    print(json.dumps(promote(name, challenger)[0]), flush=True)
"""
EXPORTERS, ROUNDS = 4, 6


def test_concurrent_exporters_leave_the_best_version_champion(stack, tmp_path):
    """Exporters in separate clones promote at the same instant against one mlflow server on
    PostgreSQL: the alias ends on the best gate-passing version, as the rule applied to all
    versions says, and every version's recorded reason agrees with where the alias is."""
    import random

    from mlflow.tracking import MlflowClient

    tmp, stack_env, state, _ = stack
    exports = _stack(stack_env, "env").stdout
    env = dict(os.environ, **dict(line.removeprefix("export ").split("=", 1) for line in exports.splitlines()),
               PYTHONPATH=str(ROOT))
    rng = random.Random(0)
    # Per round and exporter: a distinct fcd, and one exporter in four failing the gate.
    plan = [[(f"race-{r}", rng.uniform(1, 50), rng.random() > 0.25) for r in range(ROUNDS)] for _ in range(EXPORTERS)]
    go = str(tmp_path / "go")
    procs = []
    for e in range(EXPORTERS):
        clone = tmp_path / f"clone-{e}"  # its own folder: no lock file is shared
        clone.mkdir()
        procs.append(subprocess.Popen([sys.executable, "-c", PROMOTER, go, json.dumps(plan[e])], cwd=clone,
                                      env=dict(env, BENTOML_HOME=str(clone / "bentoml")), text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    try:
        for r in range(ROUNDS):
            for proc in procs:
                line = proc.stdout.readline()
                while line.startswith("{"):  # the decision of the round before
                    line = proc.stdout.readline()
                assert line == "ready\n", (line, proc.poll())
            Path(f"{go}-{r}").touch()
        done = [proc.communicate(timeout=300) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert [proc.returncode for proc in procs] == [0] * EXPORTERS, [err[-2000:] for _, err in done]

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    for r in range(ROUNDS):
        name = f"race-{r}"
        versions = {v.version: v for v in client.search_model_versions(f"name='{name}'")}
        assert len(versions) == EXPORTERS
        fcd = {k: float(v.tags["fcd"]) for k, v in versions.items()}
        passed = [k for k, v in versions.items() if v.tags["quality_gate_passed"] == "True"]
        aliases = client.get_registered_model(name).aliases
        if not passed:
            assert "champion" not in aliases
            continue
        best = min(passed, key=fcd.get)
        assert aliases["champion"] == best, (r, aliases, fcd, passed)
        for k, v in versions.items():
            reason = v.tags["promotion"]
            if k not in passed:
                assert reason.startswith("did not pass the quality gate"), reason
            elif k == best:  # promoted, and no one took the alias from it
                assert "superseded_by" not in v.tags and not reason.startswith(("did not", "ties", "fcd "
                                                                               f"{fcd[k]:.6g} >")), reason
            elif "superseded_by" in v.tags:  # was champion until a better one came
                assert fcd[v.tags["superseded_by"]] < fcd[k]
            else:  # compared with a better champion and lost
                assert reason.startswith(f"fcd {fcd[k]:.6g} >"), reason
    # No lock is left behind.
    assert not [m.name for m in client.search_registered_models() if m.name.endswith(".promotion-lock")]


# train.main that holds at GATE_STEP (its metrics so far sent) until GO_FILE exists.
HELD = """
import os, sys, time
import keras
from pipeline import errors, train

class Gate(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.g_optimizer.iterations.numpy()) == int(os.environ["GATE_STEP"]):
            open(os.environ["GATE_FILE"], "w").close()
            while not os.path.exists(os.environ["GO_FILE"]):
                time.sleep(0.05)

fit = train.fit
train.fit = lambda *a, **k: fit(*a, extra_callbacks=[Gate()], **k)
errors.run_stage(train.main, sys.argv[1:])
"""
OUTAGE_STEPS, OUTAGE_AT, OUTAGE_SECONDS = 30, 10, 5


def _stop_mlflow(state: dict) -> None:
    os.killpg(state["mlflow_pid"], 9)  # as a crash or a host restart would


def _stop_postgres(state: dict) -> None:
    from ops import stack as ops_stack

    ops_stack.stop_postgres(state)


def _held_training(d: Path, state: dict, **extra) -> subprocess.Popen:
    """The train stage against the stack's server, held at step OUTAGE_AT until d/go exists."""
    from defaults import params_yaml
    from test_train import tiny_data, train_cmd

    tiny_data(d)
    (d / "params.yaml").write_text(params_yaml(train=dict(
        arch="mlp", steps=OUTAGE_STEPS, batch_size=8, z_dim=16, virtual_labels=0, log_every=5, sample_every=15,
        checkpoint_every=5, jit_compile=False)))
    env = dict(os.environ, MLFLOW_TRACKING_URI=state["mlflow_url"], TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT),
               GATE_STEP=str(OUTAGE_AT), GATE_FILE=str(d / "gate"), GO_FILE=str(d / "go"), **extra)
    proc = subprocess.Popen([sys.executable, "-c", HELD, *train_cmd(d)[3:]], cwd=d, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (d / "gate").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(proc.communicate()[1][-3000:])
        time.sleep(0.05)
    return proc


def _every_step_once(d: Path, url: str) -> str:
    """The run's id, once it is FINISHED with every step's losses exactly once."""
    from mlflow.tracking import MlflowClient
    from test_train import losses_csv

    run_id = json.loads((d / "reports/run.json").read_text())["run_id"]
    client = MlflowClient(url)
    assert client.get_run(run_id).info.status == "FINISHED"
    steps = list(range(1, OUTAGE_STEPS + 1))
    assert [int(r["step"]) for r in losses_csv(d)] == steps
    for key in ("d_loss", "g_loss"):
        assert sorted(m.step for m in client.get_metric_history(run_id, key)) == steps, key
    grids = {a.path for a in client.list_artifacts(run_id, "samples")}
    assert {"samples/step_000015.png", "samples/step_000030.png"} <= grids, grids
    return run_id


@pytest.mark.parametrize("stop", [_stop_mlflow, _stop_postgres], ids=["mlflow-server", "postgresql"])
def test_a_tracking_outage_during_training_loses_no_step(stack, tmp_path, stop):
    """The server (or its database) goes away at step 10 of 30 and comes back (5 s, then its start):
    training waits on MLflow's retries, and the run ends FINISHED with every step once."""
    _, stack_env, _, _ = stack
    state = json.loads((Path(stack_env["STACK_DIR"]) / "stack.json").read_text())
    proc = _held_training(tmp_path, state)
    try:
        stop(state)
        (tmp_path / "go").touch()  # training goes on, into the outage
        time.sleep(OUTAGE_SECONDS)
        _stack(stack_env, "up")
        _, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err[-3000:]
    _every_step_once(tmp_path, state["mlflow_url"])


def test_an_outage_longer_than_the_retries_stops_in_one_line_and_resumes_the_same_run(stack, tmp_path):
    """MLflow's retries cut to none, so that the outage outlasts them: the stage stops in
    one line naming the server, keeps its checkpoint, and the next run resumes into the
    same MLflow run with every step once."""
    from test_train import train_cmd

    _, stack_env, _, _ = stack
    state = json.loads((Path(stack_env["STACK_DIR"]) / "stack.json").read_text())
    proc = _held_training(tmp_path, state, MLFLOW_HTTP_REQUEST_MAX_RETRIES="0")
    try:
        _stop_mlflow(state)
        (tmp_path / "go").touch()
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err[-3000:]
    assert f"lost the MLflow tracking server at {state['mlflow_url']}" in errors[0]
    assert "stays RUNNING" in errors[0] and "run the stage again" in errors[0]
    assert "it resumes from its last checkpoint into the same run" in errors[0]  # a training run
    meta = json.loads((tmp_path / "models/checkpoints/meta.json").read_text())
    assert meta["step"] == OUTAGE_AT and not meta["complete"]

    _stack(stack_env, "up")
    env = dict(os.environ, MLFLOW_TRACKING_URI=state["mlflow_url"], TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT))
    again = subprocess.run(train_cmd(tmp_path), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming MLflow run" in again.stdout and f"from step {OUTAGE_AT}" in again.stdout, again.stdout
    assert _every_step_once(tmp_path, state["mlflow_url"]) == meta["run_id"]


OUTPUTS = ["data/prepared/mnist.npz", "models/generator.keras", "models/judge.keras", "export/model_card.json",
           "reports/data.json", "reports/train/run.json"]


def _same_files(a: Path, b: Path) -> bool:
    """The same files with the same bytes (DVC, like git, keeps no empty folders)."""
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    return files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file()) and len(files) > 0 and \
        all(filecmp.cmp(a / f, b / f, shallow=False) for f in files)


def _round_trip(project: Path, env: dict, remote_args: list[str], clone: Path) -> None:
    setup = subprocess.run(["bash", "ops/remote.sh", *remote_args], cwd=project, env=env, capture_output=True, text=True)
    assert setup.returncode == 0 and "DVC remote 'storage'" in setup.stdout, setup.stdout + setup.stderr
    subprocess.run(["git", "add", "-A"], cwd=project, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "remote"], cwd=project, check=True)
    push = subprocess.run(["dvc", "push"], cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert push.returncode == 0, push.stdout + push.stderr
    subprocess.run(["git", "clone", "-q", str(project), str(clone)], check=True)
    assert not (clone / "models/generator.keras").exists()
    pull = subprocess.run(["dvc", "pull"], cwd=clone, env=env, capture_output=True, text=True, timeout=300)
    assert pull.returncode == 0, pull.stdout + pull.stderr
    for rel in OUTPUTS:
        assert filecmp.cmp(project / rel, clone / rel, shallow=False), rel
    assert _same_files(project / "export/generator", clone / "export/generator")
    assert _same_files(project / "reports/train/samples", clone / "reports/train/samples")
    status = subprocess.run(["dvc", "status"], cwd=clone, env=env, capture_output=True, text=True)
    assert status.returncode == 0 and "up to date" in status.stdout, status.stdout
    repro = subprocess.run(["dvc", "repro"], cwd=clone, env=env, capture_output=True, text=True, timeout=300)
    assert repro.returncode == 0 and "Running stage" not in repro.stdout, repro.stdout
    assert "up to date" in repro.stdout, repro.stdout


def test_dvc_s3_remote_round_trip(team_run):
    project, env, state = team_run
    _round_trip(project, env, [f"s3://mnist-gan/dvc", state["s3_url"]], project.parent / "clone-s3")
    assert "endpointurl" in (project / ".dvc/config").read_text()


def test_dvc_folder_remote_round_trip(team_run):
    project, env, state = team_run
    folder = project.parent / "dvc-remote"
    _round_trip(project, env, [str(folder)], project.parent / "clone-folder")
    assert any(folder.rglob("*")) and "endpointurl" not in (project / ".dvc/config").read_text()


def _now(stack_env: dict) -> dict:
    """The stack's state as it is now (a restarted part has a new pid)."""
    return json.loads((Path(stack_env["STACK_DIR"]) / "stack.json").read_text())


EXPORT = ["--generator", "models/generator.keras", "--metrics", "reports/metrics.json",
          "--verdict", "reports/eval/verdict.json", "--protocol", "reports/eval/protocol.json",
          "--data-report", "reports/data.json", "--training-run", "reports/train/run.json"]


def test_a_store_outage_during_export_registers_nothing_and_the_rerun_registers_once(team_run, stack, tmp_path):
    """The object store is killed before the export stage sends the generator's files: the
    stage fails in one line that names the store, no version comes from the run and the
    champion stays. With the store back, the rerun registers one version with every file."""
    import mlflow.artifacts
    from mlflow.tracking import MlflowClient

    from serving.contract import REGISTERED_MODEL

    project, env, _ = team_run
    _, stack_env, _, _ = stack
    state = _now(stack_env)
    client = MlflowClient(state["mlflow_url"])
    champion = client.get_model_version_by_alias(REGISTERED_MODEL, "champion").version
    # A result run of its own for the tiny pipeline's files, as the evaluate stage would make.
    experiment = client.get_experiment_by_name("mnist-gan").experiment_id
    run_id = client.create_run(experiment, run_name="store-outage").info.run_id
    (tmp_path / "run.json").write_text(json.dumps({"run_id": run_id, "experiment_id": experiment,
                                                   "name": "store-outage", "tracking_uri": state["mlflow_url"]}))
    cmd = [sys.executable, "-m", "pipeline.export", *EXPORT, "--run-file", str(tmp_path / "run.json"),
           "--out", str(tmp_path / "export")]
    os.killpg(state["s3_pid"], 9)
    try:
        # One retry: the stage's own few add only waiting before the same line.
        failed = subprocess.run(cmd, cwd=project, env=dict(env, MLFLOW_HTTP_REQUEST_MAX_RETRIES="1"),
                                capture_output=True, text=True, timeout=300)
    finally:
        _stack(stack_env, "up")
    errors = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert failed.returncode == 1 and len(errors) == 1 and "Traceback" not in failed.stderr, failed.stderr[-3000:]
    assert f"{state['mlflow_url']} answers but could not store the run's files in its artifact store " \
        f"({state['s3_url']}" in errors[0] and "run store-outage is FAILED: run the stage again" in errors[0], errors[0]
    assert client.search_model_versions(f"run_id = '{run_id}'") == []
    assert client.get_model_version_by_alias(REGISTERED_MODEL, "champion").version == champion

    again = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    [version] = client.search_model_versions(f"run_id = '{run_id}'")
    got = Path(mlflow.artifacts.download_artifacts(
        client.get_model_version_download_uri(REGISTERED_MODEL, version.version), dst_path=str(tmp_path / "got"),
        tracking_uri=state["mlflow_url"]))
    assert (got / "MLmodel").is_file() and _same_files(tmp_path / "export/generator", got / "artifacts/generator")
    assert client.get_run(run_id).info.status == "FINISHED"


def test_an_interrupted_dvc_push_completes_on_rerun(team_run, stack):
    """`dvc push` is killed mid-push, and the store with it: the rerun pushes the rest, `dvc
    status -c` is clean, and every object in the remote holds the bytes its name says."""
    import signal

    project, env, _ = team_run
    _, stack_env, _, _ = stack
    state = _now(stack_env)
    prefix = "dvc-interrupted/"
    _dvc_remote(project, "interrupted", "s3://mnist-gan/dvc-interrupted", state["s3_url"])  # empty at the start
    s3 = _s3(state["s3_url"])

    push = subprocess.Popen(["dvc", "push", "-r", "interrupted", "-j", "1"], cwd=project, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        while not _keys(s3, prefix) and push.poll() is None:
            time.sleep(0.01)
        os.killpg(state["s3_pid"], signal.SIGSTOP)  # the store stops answering, a request in flight
        os.killpg(push.pid, signal.SIGKILL)
        os.killpg(state["s3_pid"], signal.SIGKILL)
    finally:
        if push.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(push.pid, signal.SIGKILL)
        push.wait()
        _stack(stack_env, "up")
    kept = _keys(s3, prefix)

    again = subprocess.run(["dvc", "push", "-r", "interrupted"], cwd=project, env=env, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    status = subprocess.run(["dvc", "status", "-c", "-r", "interrupted"], cwd=project, env=env,
                            capture_output=True, text=True, timeout=300)
    assert status.returncode == 0 and "in sync" in status.stdout, status.stdout + status.stderr
    keys = _dvc_objects_whole(s3, prefix)
    assert 0 < len(kept) < len(keys) and set(kept) <= set(keys), (kept, keys)  # cut off part-way, then done


def _closed(*ports) -> bool:
    import socket

    for port in ports:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", int(port))) == 0:
                return False
    return True


# Over 8 MB: mlflow server sends it to the store in parts (a multipart upload), the kind that
# moto's own recorder cannot replay into a new server.
LARGE = 9 * 2**20


def _client_env(stack_env: dict) -> dict:
    """This environment pointed at the stack, as `eval "$(make -s stack-env)"` does, with dvc on PATH."""
    exports = _stack(stack_env, "env").stdout
    return dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                **dict(line.removeprefix("export ").split("=", 1) for line in exports.splitlines()))


def _s3(url: str):
    import boto3

    return boto3.client("s3", endpoint_url=url, aws_access_key_id="k", aws_secret_access_key="s",
                        region_name="us-east-1")


def _keys(s3, prefix: str) -> list[str]:
    return [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket="mnist-gan", Prefix=prefix)
            for o in page.get("Contents", [])]


def _dvc_objects_whole(s3, prefix: str) -> list[str]:
    """The DVC remote's objects under `prefix`, each checked to hold the bytes its name says
    (.../files/md5/ab/cdef...[.dir] is the md5 of its bytes)."""
    import hashlib

    keys = _keys(s3, prefix)
    for key in keys:
        name = "".join(key.removesuffix(".dir").split("/")[-2:])
        assert hashlib.md5(s3.get_object(Bucket="mnist-gan", Key=key)["Body"].read()).hexdigest() == name, key
    return keys


def _dvc_remote(project: Path, name: str, url: str, endpoint: str) -> None:
    """A DVC remote in the clone's own, uncommitted config."""
    with open(project / ".dvc/config.local", "a") as f:
        f.write(f"['remote \"{name}\"']\n    url = {url}\n    endpointurl = {endpoint}\n")


def _keep_an_artifact_and_a_dvc_object(stack_env: dict, d: Path, project: Path) -> tuple[str, dict]:
    """An MLflow run with a large and a small artifact, and the prepare stage's outputs pushed
    by DVC, on the stack; (the run's id, the artifacts' bytes by name)."""
    from mlflow.tracking import MlflowClient

    env = _client_env(stack_env)
    files = {"large.bin": os.urandom(LARGE), "small.txt": b"kept across down and up"}
    d.mkdir()
    for name, data in files.items():
        (d / name).write_bytes(data)
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    run_id = client.create_run("0").info.run_id
    for name in files:
        client.log_artifact(run_id, str(d / name))
    _dvc_remote(project, "kept", "s3://mnist-gan/dvc-kept", env["AWS_ENDPOINT_URL"])
    push = subprocess.run(["dvc", "push", "-r", "kept", "prepare"], cwd=project, env=env, capture_output=True,
                          text=True, timeout=120)
    assert push.returncode == 0 and "pushed" in push.stdout, push.stdout + push.stderr
    return run_id, files


def _still_there(stack_env: dict, d: Path, run_id: str, files: dict, project: Path) -> None:
    from mlflow.tracking import MlflowClient

    env = _client_env(stack_env)
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    for name, data in files.items():
        assert Path(client.download_artifacts(run_id, name, str(d / "back"))).read_bytes() == data, name
    status = subprocess.run(["dvc", "status", "-c", "-r", "kept", "prepare"], cwd=project, env=env,
                            capture_output=True, text=True, timeout=120)
    assert status.returncode == 0 and "in sync" in status.stdout, status.stdout + status.stderr
    assert _dvc_objects_whole(_s3(env["AWS_ENDPOINT_URL"]), "dvc-kept/")


def test_down_keeps_the_objects_purge_wipes_them_and_a_failed_up_leaves_nothing_running(stack, team_run, tmp_path):
    import socket

    _, env, state, _ = stack
    project = team_run[0]
    # A stack of its own, so the module's stays up for the tests above.
    own = dict(env, STACK_DIR=str(tmp_path / "own"), STACK_PG_PORT=str(free_port()),
               STACK_S3_PORT=str(free_port()), STACK_MLFLOW_PORT=str(free_port()))
    ports = (own["STACK_PG_PORT"], own["STACK_S3_PORT"], own["STACK_MLFLOW_PORT"])
    stack_py = [sys.executable, str(ROOT / "ops/stack.py")]

    # The object store's port is taken: up fails there, and stops the PostgreSQL it started.
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", int(own["STACK_S3_PORT"])))
        squatter.listen()
        failed = subprocess.run(stack_py + ["up"], env=own, capture_output=True, text=True, timeout=300)
    assert failed.returncode == 1 and f"port {own['STACK_S3_PORT']} is taken" in failed.stderr, failed.stderr
    assert "stopped PostgreSQL" in failed.stderr and _closed(*ports)

    _stack(own, "up")
    run_id, files = _keep_an_artifact_and_a_dvc_object(own, tmp_path / "kept", project)
    said = _stack(own, "down").stdout
    assert "stopped mlflow server" in said and "stopped the object store" in said and "stopped PostgreSQL" in said
    assert _closed(*ports)
    status = subprocess.run(stack_py + ["status"], env=own, capture_output=True, text=True)
    assert status.returncode == 1 and "down" in status.stdout

    # Up again: the MLflow artifacts (the large one sent in parts) and the DVC object are back.
    again = _stack(own, "up").stdout
    assert "(0 from before)" not in again and "from before)" in again, again
    _still_there(own, tmp_path / "kept", run_id, files, project)
    _stack(own, "down")

    # The stack's folder is gone (a deleted clone), its cluster is not: one line, nothing started.
    pg_data = Path(json.loads((tmp_path / "own/stack.json").read_text())["pg_data"])
    (tmp_path / "own/stack.json").unlink()
    orphan = subprocess.run(stack_py + ["up"], env=own, capture_output=True, text=True, timeout=300)
    assert orphan.returncode == 1 and orphan.stderr.count("\n") == 1, orphan.stderr
    assert "whose password went" in orphan.stderr and "make stack-down PURGE=1" in orphan.stderr
    assert "Traceback" not in orphan.stderr and _closed(*ports)
    purged = _stack(own, "down", "--purge").stdout
    assert "deleted the database, the stored objects" in purged and not pg_data.exists()
    assert not (tmp_path / "own").exists()  # the objects, the state and the logs


def test_make_serve_on_another_machine_fetches_the_champion(team_run, tmp_path):
    """A second machine has the server's URL and an empty BentoML store: the
    selection `make serve` runs copies the champion in from the registry, under
    the tag the export gave it, and `bentoml serve` serves it."""
    import requests

    from e2e_util import Served

    project, env, state = team_run
    card = json.loads((project / "export/model_card.json").read_text())
    home = tmp_path / "bentoml"
    other = {k: v for k, v in env.items() if not k.startswith(("AWS_", "MLFLOW_S3"))}
    other.update(BENTOML_HOME=str(home), PYTHONPATH=str(ROOT), BENTOML_DO_NOT_TRACK="true")
    sel = subprocess.run([sys.executable, "-m", "serving.selection"], cwd=tmp_path, env=other,
                         capture_output=True, text=True, timeout=300)
    assert sel.returncode == 0 and "copied from the registry" in sel.stdout, sel.stdout + sel.stderr
    tag = sel.stdout.split()[1].rstrip(":")
    name, version = tag.split(":")
    assert _same_files(project / "export/generator", home / "models" / name / version / "saved_model")
    again = subprocess.run([sys.executable, "-m", "serving.selection"], cwd=tmp_path, env=other,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "copied" not in again.stdout, again.stdout + again.stderr
    served = Served(tmp_path, other)
    try:
        served.wait_ready()
        info = requests.get(f"{served.url}/info", timeout=10).json()
        assert info["tag"] == tag and info["selected"]["by"] == "champion"
        assert info["mlflow_run_id"] == card["mlflow_run_id"] and info["z_dim"] == card["z_dim"]
        r = requests.post(f"{served.url}/generate", json={"z": [[0.0] * card["z_dim"]]}, timeout=30)
        assert r.status_code == 200 and len(r.json()[0]) == 28
    finally:
        served.stop()
