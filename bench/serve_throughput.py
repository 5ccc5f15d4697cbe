"""Serving throughput: `bentoml serve` against the in-process bound, one run.

    python bench/serve_throughput.py                 # seed 001 DCGAN and seed 004 MLP, z_dim 100
    python bench/serve_throughput.py --arch dcgan --seconds 8 --repeat 3

For each generator (untrained weights; throughput does not depend on them):
the in-process bound (SavedModel `serve` at batch 64, images/s), then, each on
a free loopback port with a temp BentoML home and MLflow store, driven by the
same asyncio HTTP client at concurrency 1, 8 and 32 with single-z calls:
ours (`bentoml serve serving.service:Generator`, `/generate` answered as JSON,
the default, and as `.npy` with `Accept: application/x-npy`); its peers, a
plain BentoML service with default adaptive batching and no tuning
(bench/plain_service.py) and `mlflow models serve` of the same generator
registered as the export stage logs it; and the plain service's no-op
endpoint (a constant 28 x 28 JSON list: BentoML's HTTP and JSON ceiling), bare and
behind our request guard (what the guard costs). Prints requests/s (= images/s), its ratio
to the bound and to `mlflow models serve`, p50/p99 latency, and per level
ours over the plain service and over the no-op ceiling; each figure is the median of --repeat
rounds, and a ratio is taken against the bound measured in the same round.
The client shares the machine's cores with the server, as a
sidecar load generator would. The tables go to docs/results/serve_throughput.md
too (`--results DIR`, `--no-results`).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench import results as results_page  # noqa: E402  (main's `results` are the measurements)
from pipeline import archs  # noqa: E402

LEVELS = (1, 8, 32)
BOUND_BATCH = 64


def build(arch: str, z_dim: int):
    from pipeline import params
    from pipeline.models import build_generator

    return build_generator(params.load("train", ROOT / "params.yaml",
                                       {"arch": arch, "z_dim": z_dim}))


def store(arch: str, z_dim: int, tmp: Path) -> tuple[str, Path]:
    from pipeline.export import export_saved_model, model_card
    from serving import contract

    gen = build(arch, z_dim)
    target = tmp / f"{arch}-generator"
    export_saved_model(gen, target)
    card = model_card(gen, {"run_id": "bench"}, {}, {"data_sha256": "none"},
                      {"train.arch": arch, "train.loss": "bce"})
    return contract.store(target, card), target


def in_process(saved: Path, z_dim: int):
    """A function measuring the SavedModel alone at batch 64 for some
    seconds, in images/s: the bound the HTTP figures are divided by."""
    import numpy as np
    import tensorflow as tf

    model = tf.saved_model.load(str(saved))
    z = np.random.default_rng(0).standard_normal((BOUND_BATCH, z_dim)).astype(np.float32)
    for _ in range(3):
        model.serve(z).numpy()

    def measure(seconds: float) -> float:
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            model.serve(z).numpy()
            n += 1
        return n * BOUND_BATCH / (time.perf_counter() - t0)
    return measure


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(cmd: list[str], env: dict[str, str], log: Path, ready: str) -> tuple[subprocess.Popen, str]:
    """Starts `cmd` (with {port} filled in) and waits until GET `ready` answers 200."""
    import requests

    port = free_port()
    # The venv's tools (mlflow runs `uvicorn` by name) whether or not it is activated.
    env = dict(env, PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    proc = subprocess.Popen([c.format(port=port) for c in cmd], cwd=ROOT, env=env, stdout=log.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(log.read_text()[-3000:])
        try:
            if requests.get(f"{url}{ready}", timeout=2).status_code == 200:
                return proc, url
        except requests.RequestException:  # still starting
            pass
        time.sleep(0.5)
    raise TimeoutError(log.read_text()[-3000:])


def bentoml_serve(target: str, env: dict[str, str], log: Path) -> tuple[subprocess.Popen, str]:
    return serve([str(Path(sys.executable).parent / "bentoml"), "serve", target, "--host", "127.0.0.1",
                  "--port", "{port}"], env, log, "/readyz")


def mlflow_serve(saved: Path, tmp: Path, env: dict[str, str], log: Path) -> tuple[subprocess.Popen, str]:
    """`mlflow models serve` of the generator registered as the export stage logs it
    (the same pyfunc), what an MLflow user would run instead of a service."""
    import mlflow

    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    mlflow.set_experiment("serve-bench")
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="generator", python_model=str(ROOT / "pipeline" / "mlflow_model.py"),
                                       artifacts={"saved_model": str(saved)},
                                       registered_model_name=f"bench-{saved.name}")
    uri = f"models:/bench-{saved.name}/{info.registered_model_version}"
    return serve([str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", uri, "--env-manager",
                  "local", "--host", "127.0.0.1", "--port", "{port}"], env, log, "/ping")


MODES = {"json": "application/json", "npy": "application/x-npy"}


async def load(url: str, bodies: list[bytes], concurrency: int, seconds: float, accept: str = MODES["json"]) -> dict:
    """`concurrency` clients each sending single-z calls to `url` back to back for
    `seconds`; latencies of the calls that completed."""
    import aiohttp

    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds
    conn = aiohttp.TCPConnector(limit=concurrency)
    headers = {"Content-Type": "application/json", "Accept": accept}
    async with aiohttp.ClientSession(connector=conn) as session:
        async def client(k: int) -> None:
            nonlocal errors
            i = k
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                async with session.post(url, data=bodies[i % len(bodies)],
                                        headers=headers) as r:
                    await r.read()
                    if r.status != 200:
                        errors += 1
                latencies.append(time.perf_counter() - t0)
                i += concurrency

        t0 = time.perf_counter()
        await asyncio.gather(*(client(k) for k in range(concurrency)))
        elapsed = time.perf_counter() - t0
    latencies.sort()
    return {"rps": len(latencies) / elapsed, "p50": latencies[len(latencies) // 2],
            "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
            "n": len(latencies), "errors": errors}


WRK_SCRIPT = """
local bodies = {%s}
local headers = {["Content-Type"] = "application/json", ["Accept"] = "%s"}
local i = 0
request = function()
  i = i + 1
  return wrk.format("POST", nil, headers, bodies[i %% #bodies + 1])
end
"""


def _wrk_ms(text: str) -> float:
    value, unit = float(text.rstrip("unms")), text.lstrip("0123456789.")
    return value * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def load_wrk(url: str, bodies: list[bytes], concurrency: int, seconds: float, accept: str = MODES["json"]) -> dict:
    """The same load from wrk (one C thread, `concurrency` connections), a client that
    leaves more of the shared cores to the server than Python's asyncio does."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(WRK_SCRIPT % (", ".join(f"[=[{b.decode()}]=]" for b in bodies), accept))
    try:
        out = subprocess.run(["wrk", "-t1", f"-c{concurrency}", f"-d{seconds:g}s", "--latency", "-s", f.name, url],
                             capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(f.name)
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line.split()}
    done = int(next(line.split()[0] for line in out.splitlines() if "requests in" in line))
    errors = int(lines["Non-2xx"][-1]) if "Non-2xx" in lines else 0
    return {"rps": float(lines["Requests/sec:"][1]), "p50": _wrk_ms(lines["50%"][1]) / 1e3,
            "p99": _wrk_ms(lines["99%"][1]) / 1e3, "n": done, "errors": errors}


def bench(targets: dict[str, tuple[str, list[bytes], str]], bound, seconds: float,
          repeat: int, client: str = "aiohttp") -> tuple[float, dict[tuple, dict]]:
    """Rounds of (bound, then each concurrency level over every target), so that load
    from other processes drifts over all alike; ratios are taken within a round.
    `targets`: name -> (URL, request bodies, Accept)."""
    for url, bodies, accept in targets.values():
        # Warm-up also trains BentoML's batching optimizer (its first calls are
        # its own calibration runs).
        asyncio.run(load(url, bodies, 8, 3.0, accept))
    bounds, rounds = [], {(name, c): [] for c in LEVELS for name in targets}
    for _ in range(repeat):
        bounds.append(bound(2.0))
        for c in LEVELS:
            for name, (url, bodies, accept) in targets.items():
                r = (load_wrk(url, bodies, c, seconds, accept) if client == "wrk"
                     else asyncio.run(load(url, bodies, c, seconds, accept)))
                r["ratio"] = r["rps"] / bounds[-1]
                rounds[name, c].append(r)
            for name in targets:
                rounds[name, c][-1]["vs_mlflow"] = (rounds[name, c][-1]["rps"] / rounds["mlflow", c][-1]["rps"]
                                                    if ("mlflow", c) in rounds else float("nan"))
    out = {}
    for key, rs in rounds.items():
        out[key] = {k: statistics.median(r[k] for r in rs) for k in ("rps", "ratio", "vs_mlflow", "p50", "p99")}
        out[key]["n"] = sum(r["n"] for r in rs)
        out[key]["errors"] = sum(r["errors"] for r in rs)
    return statistics.median(bounds), out


def z_bodies(z_dim: int, key: str) -> list[bytes]:
    import numpy as np

    rng = np.random.default_rng(1)
    return [json.dumps({key: [rng.standard_normal(z_dim).round(6).tolist()]}).encode() for _ in range(256)]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", choices=archs.NAMES, action="append",
                    help="generator(s) to measure; default: dcgan and mlp")
    ap.add_argument("--z-dim", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=6.0, help="per round and concurrency level")
    ap.add_argument("--repeat", type=int, default=3, help="rounds; figures are medians")
    ap.add_argument("--client", choices=["aiohttp", "wrk"], default="aiohttp",
                    help="the load generator for every server (wrk: Debian's wrk, a C client)")
    results_page.add_arguments(ap)
    args = ap.parse_args(argv)
    chosen = args.arch or ["dcgan", "mlp"]
    if args.client == "wrk" and shutil.which("wrk") is None:
        raise SystemExit("--client wrk needs wrk on PATH (Debian: apt-get install wrk)")

    tmp = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    # Before bentoml is imported: the store lives in the temp folder.
    os.environ["BENTOML_HOME"] = str(tmp / "bentoml")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env = dict(os.environ, PYTHONPATH=str(ROOT), BENTOML_DO_NOT_TRACK="true")
    sys.path.insert(0, str(ROOT))
    say = results_page.Printout()
    say(f"cpus {os.cpu_count()}; client {args.client}; z_dim {args.z_dim}; {args.repeat} rounds of {args.seconds:g}s; "
        f"service workers {env.get('MNIST_GAN_WORKERS', 1)}, TF threads per op "
        f"{env.get('MNIST_GAN_TF_THREADS', 'auto')} (0 = TF default; auto: 1 for the MLP, 0 for the conv nets), BentoML batching hold "
        f"{'on' if env.get('MNIST_GAN_BATCH_HOLD') == '1' else 'off'}; medians")
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp / 'mlflow.db'}"
    for arch in chosen:
        tag, saved = store(arch, args.z_dim, tmp)
        bound = in_process(saved, args.z_dim)
        ours_body, plain_body, mlflow_body = (z_bodies(args.z_dim, k) for k in ("z", "z", "inputs"))
        servers = []
        try:
            ours, ours_url = bentoml_serve("serving.service:Generator", dict(env, MNIST_GAN_MODEL=tag),
                                           tmp / f"{arch}-ours.log")
            servers.append(ours)
            plain, plain_url = bentoml_serve("bench.plain_service:Plain", dict(env, PLAIN_SAVED_MODEL=str(saved)),
                                             tmp / f"{arch}-plain.log")
            servers.append(plain)
            mlf, mlflow_url = mlflow_serve(saved, tmp, env, tmp / f"{arch}-mlflow.log")
            servers.append(mlf)
            guarded, guarded_url = bentoml_serve("bench.plain_service:Plain",
                                                 dict(env, PLAIN_SAVED_MODEL=str(saved), PLAIN_GUARD="1"),
                                                 tmp / f"{arch}-guarded.log")
            servers.append(guarded)
            targets = {
                "ours json": (f"{ours_url}/generate", ours_body, MODES["json"]),
                "ours npy": (f"{ours_url}/generate", ours_body, MODES["npy"]),
                "plain bentoml": (f"{plain_url}/generate", plain_body, MODES["json"]),
                "mlflow": (f"{mlflow_url}/invocations", mlflow_body, MODES["json"]),
                "no-op ceiling": (f"{plain_url}/noop", plain_body, MODES["json"]),
                "no-op guarded": (f"{guarded_url}/noop", plain_body, MODES["json"]),
            }
            bound_rate, results = bench(targets, bound, args.seconds, args.repeat, args.client)
        finally:
            for proc in servers:
                os.killpg(proc.pid, 15)
                proc.wait(60)
        say(f"\n{arch}: in-process bound {bound_rate:8.1f} images/s (SavedModel serve, batch {BOUND_BATCH})")
        say(f"  {'server':>14} {'concurrency':>11} {'req/s':>8} {'ratio':>6} {'/mlflow':>7} {'p50 ms':>7} "
            f"{'p99 ms':>7} {'calls':>6} {'errors':>6}")
        for c in LEVELS:
            for name in targets:
                r = results[name, c]
                say(f"  {name:>14} {c:>11} {r['rps']:8.1f} {r['ratio']:6.2f} {r['vs_mlflow']:7.2f} "
                    f"{r['p50'] * 1e3:7.1f} {r['p99'] * 1e3:7.1f} {r['n']:6d} {r['errors']:6d}")
            ours_json, ours_npy = results["ours json", c]["rps"], results["ours npy", c]["rps"]
            say(f"  {'':>14} c={c}: npy / json {ours_npy / ours_json:.2f}; ours json / plain bentoml "
                f"{ours_json / results['plain bentoml', c]['rps']:.2f}; json / no-op ceiling "
                f"{ours_json / results['no-op ceiling', c]['rps']:.2f}; no-op behind our guard / bare "
                f"{results['no-op guarded', c]['rps'] / results['no-op ceiling', c]['rps']:.2f}")
    if args.results is not None:
        results_page.publish("serve_throughput", "Serving throughput: bentoml serve against the in-process bound",
                             say.markdown(), argv=argv, out=args.results)


if __name__ == "__main__":
    main()
