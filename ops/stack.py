"""A team's tracking stack on this machine, from the engines teams run:

- PostgreSQL (Debian's `postgresql`): MLflow's backend store;
- an S3-compatible object store (`moto`'s S3 server, standing in for S3 or
  MinIO, with its objects kept on disk by ops/s3_store.py): MLflow's artifacts
  and a DVC remote;
- `mlflow server` on that database and that bucket, proxying the artifacts, so
  that clients need only its URL.

    python ops/stack.py up      # start what is not running; print the URLs
    python ops/stack.py env     # the shell exports that point a client at it (make -s stack-env)
    python ops/stack.py down    # stop all three (the database and the objects stay on disk; --purge
                                # deletes them, also a cluster whose stack.json is gone)

Everything lives in STACK_DIR (default `.stack/`): the database cluster, the
objects (`s3/`), logs, pids and `stack.json`. Ports: STACK_PG_PORT,
STACK_S3_PORT, STACK_MLFLOW_PORT. The database has a random password, kept in
`stack.json` (mode 600), and listens on loopback only. The objects are written
to disk before the store answers, and loaded back at `up`: they stay across
`down` and `up`, and a killed store loses none that a client was told were
stored (docs/team.md).

PostgreSQL refuses to run as root; as root the cluster is run by the
`postgres` user and lives in its home, under a name derived from STACK_DIR.
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
BUCKET = "mnist-gan"  # MLflow's artifacts under mlflow/, a DVC remote under dvc/
DB = "mlflow"
DB_USER = "mlflow"
# moto accepts any credentials; S3 clients (boto3, dvc-s3) need some.
S3_KEY = {"AWS_ACCESS_KEY_ID": "stack", "AWS_SECRET_ACCESS_KEY": "stack-secret", "AWS_DEFAULT_REGION": "us-east-1"}
START_SECONDS = 120
# mlflow server's tries at the store for each file a client sends (botocore's default: 5, with
# backoff): a store that is down then fails that request soon with a 500, and the client's own
# retries (MLFLOW_HTTP_REQUEST_MAX_RETRIES) decide how long to wait. A value set in the environment wins.
STORE_RETRIES = {"AWS_RETRY_MODE": "standard", "AWS_MAX_ATTEMPTS": "2"}


class StackError(RuntimeError):
    pass


def config() -> dict:
    state = Path(os.environ.get("STACK_DIR") or ROOT / ".stack").resolve()
    return {"dir": state,
            "pg_port": int(os.environ.get("STACK_PG_PORT", 5433)),
            "s3_port": int(os.environ.get("STACK_S3_PORT", 9000)),
            "mlflow_port": int(os.environ.get("STACK_MLFLOW_PORT", 5080))}


def _state(cfg: dict) -> dict:
    path = cfg["dir"] / "stack.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _save(cfg: dict, state: dict) -> None:
    path = cfg["dir"] / "stack.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.chmod(0o600)
    tmp.replace(path)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait(what: str, ready, proc: subprocess.Popen | None, log: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if ready():
            return
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.3)
    tail = log.read_text()[-2000:] if log.is_file() else ""
    raise StackError(f"{what} did not start (log {log}):\n{tail}")


# PostgreSQL ------------------------------------------------------------------------------------

def _pg_bin(name: str) -> str:
    """A PostgreSQL server program: on PATH, else Debian's newest
    /usr/lib/postgresql/<version>/bin."""
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                      key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if not versions:
        raise StackError(f"{name} not found: install PostgreSQL (Debian: apt-get install postgresql)")
    return versions[-1]


def _as_pg_user() -> list[str]:
    """The prefix that runs PostgreSQL's programs: none, or `runuser -u postgres` as root."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise StackError("PostgreSQL does not run as root and there is no `postgres` user "
                         "(Debian's postgresql package makes one)") from None
    return ["runuser", "-u", "postgres", "--"]


def _pg_data(cfg: dict) -> Path:
    if os.geteuid() != 0:
        return cfg["dir"] / "pg"
    home = Path(pwd.getpwnam("postgres").pw_dir)
    return home / f"mnist-gan-stack-{hashlib.sha256(str(cfg['dir']).encode()).hexdigest()[:12]}"


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise StackError(f"{what} failed: {(proc.stderr or proc.stdout)[-1500:]}")


def pg_url(state: dict, driver: str = "postgresql") -> str:
    return f"{driver}://{DB_USER}:{state['pg_password']}@127.0.0.1:{state['pg_port']}/{DB}"


def start_postgres(cfg: dict, state: dict) -> str:
    data = _pg_data(cfg)
    prefix = _as_pg_user()
    # As root the server (the postgres user) may not reach STACK_DIR: its log lies beside its data.
    log = data.parent / f"{data.name}.log" if prefix else cfg["dir"] / "postgres.log"
    if not (data / "PG_VERSION").is_file():
        state["pg_password"] = secrets.token_urlsafe(18)
        fd, pwfile = tempfile.mkstemp(prefix="stack-pw-")  # readable by its owner only
        try:
            os.write(fd, (state["pg_password"] + "\n").encode())
            os.close(fd)
            if prefix:
                shutil.chown(pwfile, "postgres")
            _run(prefix + [_pg_bin("initdb"), "-D", str(data), "-U", DB_USER, "--auth=scram-sha-256",
                           f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C"], "initdb")
        finally:
            os.unlink(pwfile)
        did = f"created a database cluster in {data}"
    elif "pg_password" not in state:
        # Made by a stack whose stack.json is gone (a deleted clone, as root the cluster lives
        # in the postgres user's home): its password is lost with it.
        raise StackError(f"the database cluster in {data} was made by an earlier stack whose password went "
                         f"with its {cfg['dir'] / 'stack.json'}; `make stack-down PURGE=1` deletes that cluster "
                         "(and its runs), then `make stack` makes a new one")
    else:
        did = f"reused the database cluster in {data}"
    state["pg_data"], state["pg_port"] = str(data), cfg["pg_port"]
    if _listening(cfg["pg_port"]) and _pg_running(prefix, data):
        return f"PostgreSQL already running on 127.0.0.1:{cfg['pg_port']}"
    if _listening(cfg["pg_port"]):
        raise StackError(f"port {cfg['pg_port']} is taken by another program (set STACK_PG_PORT)")
    # The socket in the data folder: no write access to /var/run/postgresql is needed.
    _run(prefix + [_pg_bin("pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", str(START_SECONDS),
                   "-o", f"-p {cfg['pg_port']} -k {data} -c listen_addresses=127.0.0.1", "start"], "pg_ctl start")
    _ensure_database(state)
    return f"PostgreSQL on 127.0.0.1:{cfg['pg_port']} ({did}; database {DB!r}, user {DB_USER!r})"


def _pg_running(prefix: list[str], data: Path) -> bool:
    return subprocess.run(prefix + [_pg_bin("pg_ctl"), "-D", str(data), "status"],
                          capture_output=True).returncode == 0


def _ensure_database(state: dict) -> None:
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=state["pg_port"], user=DB_USER,
                            password=state["pg_password"], dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB,))
        if cur.fetchone() is None:
            cur.execute(f"CREATE DATABASE {DB}")
    conn.close()


def stop_postgres(state: dict) -> str:
    data = state.get("pg_data")
    if not data or not Path(data).exists():
        return "PostgreSQL: no cluster"
    prefix = _as_pg_user()
    if not _pg_running(prefix, Path(data)):
        return "PostgreSQL was not running"
    _run(prefix + [_pg_bin("pg_ctl"), "-D", data, "-m", "fast", "-w", "stop"], "pg_ctl stop")
    return f"stopped PostgreSQL (the database stays in {data})"


# The object store and the tracking server -------------------------------------------------------

def _spawn(cfg: dict, name: str, cmd: list[str], env: dict) -> subprocess.Popen:
    log = open(cfg["dir"] / f"{name}.log", "ab")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=env, cwd=cfg["dir"], start_new_session=True)


def s3_env(state: dict) -> dict:
    return dict(S3_KEY, MLFLOW_S3_ENDPOINT_URL=state["s3_url"], AWS_ENDPOINT_URL=state["s3_url"])


def start_s3(cfg: dict, state: dict) -> str:
    state["s3_url"] = f"http://127.0.0.1:{cfg['s3_port']}"
    if _alive(state.get("s3_pid")) and _listening(cfg["s3_port"]):
        return f"object store already running at {state['s3_url']}"
    if _listening(cfg["s3_port"]):
        raise StackError(f"port {cfg['s3_port']} is taken by another program (set STACK_S3_PORT)")
    env = dict(os.environ, **S3_KEY)
    objects = cfg["dir"] / "s3"
    kept = sum(1 for _ in objects.glob("*/objects/*/*.json"))
    proc = _spawn(cfg, "s3", [sys.executable, str(ROOT / "ops/s3_store.py"), "-H", "127.0.0.1",
                              "-p", str(cfg["s3_port"]), "--dir", str(objects)], env)
    state["s3_pid"] = proc.pid
    _wait("the object store", lambda: _listening(cfg["s3_port"]), proc, cfg["dir"] / "s3.log")
    import boto3

    s3 = boto3.client("s3", endpoint_url=state["s3_url"], aws_access_key_id=S3_KEY["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=S3_KEY["AWS_SECRET_ACCESS_KEY"], region_name=S3_KEY["AWS_DEFAULT_REGION"])
    try:
        s3.create_bucket(Bucket=BUCKET)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass  # kept from before
    return (f"S3-compatible object store (moto) at {state['s3_url']}, bucket {BUCKET!r}; "
            f"objects kept in {objects} ({kept} from before)")


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def start_mlflow(cfg: dict, state: dict) -> str:
    state["mlflow_url"] = url = f"http://127.0.0.1:{cfg['mlflow_port']}"
    if _alive(state.get("mlflow_pid")) and _healthy(url):
        return f"mlflow server already running at {url}"
    if _listening(cfg["mlflow_port"]):
        raise StackError(f"port {cfg['mlflow_port']} is taken by another program (set STACK_MLFLOW_PORT)")
    # The store's URI (with its password) by environment, not on the command line that `ps` shows.
    env = dict(os.environ, **{k: os.environ.get(k, v) for k, v in STORE_RETRIES.items()}, **s3_env(state),
               MLFLOW_BACKEND_STORE_URI=pg_url(state, "postgresql+psycopg2"),
               MLFLOW_ARTIFACTS_DESTINATION=f"s3://{BUCKET}/mlflow")
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = _spawn(cfg, "mlflow", [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port",
                                  str(cfg["mlflow_port"]), "--serve-artifacts",
                                  "--workers", os.environ.get("STACK_MLFLOW_WORKERS", "2")], env)
    state["mlflow_pid"] = proc.pid
    _wait("mlflow server", lambda: _healthy(url), proc, cfg["dir"] / "mlflow.log")
    return f"mlflow server at {url} (backend store: PostgreSQL {DB!r}; artifacts: s3://{BUCKET}/mlflow, proxied)"


def _stop_group(pid: int | None, what: str) -> str:
    if not _alive(pid):
        return f"{what} was not running"
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return f"{what} was not running"
    deadline = time.monotonic() + 20
    while _alive(pid) and time.monotonic() < deadline:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.2)
    if _alive(pid):
        os.killpg(pid, signal.SIGKILL)
    return f"stopped {what} (pid {pid})"


# Commands --------------------------------------------------------------------------------------

def exports(state: dict) -> str:
    """Shell lines that point the pipeline (MLflow) and DVC's S3 remote at the stack."""
    lines = [f"export MLFLOW_TRACKING_URI={state['mlflow_url']}"]
    lines += [f"export {k}={v}" for k, v in s3_env(state).items()]
    return "\n".join(lines)


def up(cfg: dict) -> dict:
    """Starts what is not running; if a part fails to start, stops what this call started."""
    cfg["dir"].mkdir(parents=True, exist_ok=True)
    state = _state(cfg)
    was = {"postgres": bool(state.get("pg_data")) and _pg_running(_as_pg_user(), Path(state["pg_data"])),
           "s3": _alive(state.get("s3_pid")), "mlflow": _alive(state.get("mlflow_pid"))}
    try:
        for start in (start_postgres, start_s3, start_mlflow):
            print(start(cfg, state), flush=True)
    except BaseException:
        _undo(state, was)
        raise
    finally:
        _save(cfg, state)
    print(f"state, logs: {cfg['dir']}")
    print("point a shell at it:  eval \"$(make -s stack-env)\"")
    print(f"a DVC remote in its bucket:  make remote URL=s3://{BUCKET}/dvc ENDPOINT={state['s3_url']}")
    return state


def _undo(state: dict, was: dict) -> None:
    """Stops the parts that were not running before a failed `up`."""
    if not was["mlflow"] and state.get("mlflow_pid"):
        print(_stop_group(state.pop("mlflow_pid"), "mlflow server"), file=sys.stderr)
    if not was["s3"] and state.get("s3_pid"):
        print(_stop_group(state.pop("s3_pid"), "the object store"), file=sys.stderr)
    if not was["postgres"] and state.get("pg_data"):
        print(stop_postgres(state), file=sys.stderr)


def down(cfg: dict, purge: bool = False) -> None:
    state = _state(cfg)
    if not state.get("pg_data") and (_pg_data(cfg) / "PG_VERSION").is_file():
        state["pg_data"] = str(_pg_data(cfg))  # a cluster whose stack.json is gone: still this STACK_DIR's
    if not state:
        print(f"no stack in {cfg['dir']}")
        return
    print(_stop_group(state.pop("mlflow_pid", None), "mlflow server"))
    print(_stop_group(state.pop("s3_pid", None), f"the object store (its objects stay in {cfg['dir'] / 's3'})"))
    print(stop_postgres(state))
    _save(cfg, state)
    if purge:
        if state.get("pg_data"):
            shutil.rmtree(state["pg_data"], ignore_errors=True)
            Path(state["pg_data"] + ".log").unlink(missing_ok=True)
        shutil.rmtree(cfg["dir"], ignore_errors=True)
        print(f"deleted the database, the stored objects and {cfg['dir']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="PostgreSQL + an S3-compatible store + mlflow server on loopback")
    ap.add_argument("command", choices=["up", "down", "env", "status"])
    ap.add_argument("--purge", action="store_true", help="with down: delete the database and the state too")
    args = ap.parse_args(argv)
    cfg = config()
    try:
        if args.command == "up":
            up(cfg)
        elif args.command == "down":
            down(cfg, purge=args.purge)
        else:
            state = _state(cfg)
            if not state.get("mlflow_url"):
                print(f"no stack in {cfg['dir']}: python ops/stack.py up", file=sys.stderr)
                return 1
            if args.command == "env":
                print(exports(state))
            else:
                running = _healthy(state["mlflow_url"])
                print(f"mlflow server {state['mlflow_url']}: {'up' if running else 'down'}")
                return 0 if running else 1
    except StackError as exc:
        print(f"stack: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
