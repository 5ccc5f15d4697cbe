"""Serving throughput: `bentoml serve` against the in-process bound, one run.

    python bench/serve_throughput.py                 # seed 001 DCGAN and seed 004 MLP, z_dim 100
    python bench/serve_throughput.py --arch dcgan --seconds 8 --repeat 3

For each generator (untrained weights; throughput does not depend on them):
the in-process bound (SavedModel `serve` at batch 64, images/s), then a real
`bentoml serve serving.service:Generator` on a free loopback port with a temp
BentoML home, driven by an asyncio HTTP client at concurrency 1, 8 and 32
with single-z `/generate` calls, answered as JSON (the default) and as `.npy`
(`Accept: application/x-npy`). Prints requests/s (= images/s), its ratio
to the bound, the .npy rate over the JSON one, and p50/p99 latency; each figure is the median of --repeat
rounds, and a ratio is taken against the bound measured in the same round.
The client shares the machine's cores with the server, as a
sidecar load generator would.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LEVELS = (1, 8, 32)
BOUND_BATCH = 64


def build(arch: str, z_dim: int):
    from pipeline.models import build_generator
    from pipeline.params import TrainParams

    return build_generator(TrainParams(arch=arch, z_dim=z_dim))


def store(arch: str, z_dim: int, tmp: Path) -> tuple[str, Path]:
    from pipeline.export import export_saved_model, model_card, save_to_bentoml

    gen = build(arch, z_dim)
    target = tmp / f"{arch}-generator"
    export_saved_model(gen, target)
    card = model_card(gen, {"run_id": "bench"}, {}, {"data_sha256": "none"},
                      {"train.arch": arch, "train.loss": "bce"})
    return str(save_to_bentoml(target, card)), target


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


def serve(tag: str, env: dict[str, str], log: Path) -> tuple[subprocess.Popen, str]:
    import requests

    port = free_port()
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "bentoml"), "serve", "serving.service:Generator",
         "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT, env=dict(env, MNIST_GAN_MODEL=tag), stdout=log.open("w"),
        stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(log.read_text()[-3000:])
        try:
            if requests.get(f"{url}/readyz", timeout=2).status_code == 200:
                return proc, url
        except requests.RequestException:  # still starting
            pass
        time.sleep(0.5)
    raise TimeoutError(log.read_text()[-3000:])


MODES = {"json": "application/json", "npy": "application/x-npy"}


async def load(url: str, bodies: list[bytes], concurrency: int, seconds: float, accept: str = MODES["json"]) -> dict:
    """`concurrency` clients each sending single-z /generate calls back to
    back for `seconds`; latencies of the calls that completed."""
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
                async with session.post(f"{url}/generate", data=bodies[i % len(bodies)],
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


def bench(url: str, bound, z_dim: int, seconds: float, repeat: int) -> tuple[float, dict[tuple, dict]]:
    """Rounds of (bound, then each concurrency level), so that load from
    other processes drifts over both alike; ratios are taken within a round."""
    import numpy as np

    rng = np.random.default_rng(1)
    bodies = [json.dumps({"z": [rng.standard_normal(z_dim).round(6).tolist()]}).encode()
              for _ in range(256)]
    # Warm-up also trains BentoML's batching optimizer (its first calls are
    # its own calibration runs).
    asyncio.run(load(url, bodies, 8, 3.0))
    bounds, rounds = [], {(m, c): [] for c in LEVELS for m in MODES}
    for _ in range(repeat):
        bounds.append(bound(2.0))
        for c in LEVELS:
            for mode, accept in MODES.items():
                r = asyncio.run(load(url, bodies, c, seconds, accept))
                r["ratio"] = r["rps"] / bounds[-1]
                rounds[mode, c].append(r)
            rounds["npy", c][-1]["vs_json"] = rounds["npy", c][-1]["rps"] / rounds["json", c][-1]["rps"]
    out = {}
    for key, rs in rounds.items():
        out[key] = {k: statistics.median(r.get(k, 1.0) for r in rs) for k in ("rps", "ratio", "vs_json", "p50", "p99")}
        out[key]["n"] = sum(r["n"] for r in rs)
        out[key]["errors"] = sum(r["errors"] for r in rs)
    return statistics.median(bounds), out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", choices=["dcgan", "mlp"], action="append",
                    help="generator(s) to measure; default: dcgan and mlp")
    ap.add_argument("--z-dim", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=6.0, help="per round and concurrency level")
    ap.add_argument("--repeat", type=int, default=3, help="rounds; figures are medians")
    args = ap.parse_args(argv)
    archs = args.arch or ["dcgan", "mlp"]

    tmp = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    # Before bentoml is imported: the store lives in the temp folder.
    os.environ["BENTOML_HOME"] = str(tmp / "bentoml")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env = dict(os.environ, PYTHONPATH=str(ROOT), BENTOML_DO_NOT_TRACK="true")
    sys.path.insert(0, str(ROOT))
    print(f"cpus {os.cpu_count()}; z_dim {args.z_dim}; {args.repeat} rounds of {args.seconds:g}s; "
          f"service workers {env.get('MNIST_GAN_WORKERS', 1)}, TF threads per op "
          f"{env.get('MNIST_GAN_TF_THREADS', 1)} (0 = TF default), BentoML batching hold "
          f"{'on' if env.get('MNIST_GAN_BATCH_HOLD') == '1' else 'off'}; medians")
    for arch in archs:
        tag, saved = store(arch, args.z_dim, tmp)
        bound = in_process(saved, args.z_dim)
        proc, url = serve(tag, env, tmp / f"{arch}-serve.log")
        try:
            bound_rate, results = bench(url, bound, args.z_dim, args.seconds, args.repeat)
        finally:
            os.killpg(proc.pid, 15)
            proc.wait(60)
        print(f"\n{arch}: in-process bound {bound_rate:8.1f} images/s (SavedModel serve, batch {BOUND_BATCH})")
        print(f"  {'answer':>6} {'concurrency':>11} {'req/s':>8} {'ratio':>6} {'/ json':>6} {'p50 ms':>7} "
              f"{'p99 ms':>7} {'calls':>6} {'errors':>6}")
        for (mode, c), r in results.items():
            print(f"  {mode:>6} {c:>11} {r['rps']:8.1f} {r['ratio']:6.2f} {r['vs_json']:6.2f} {r['p50'] * 1e3:7.1f} "
                  f"{r['p99'] * 1e3:7.1f} {r['n']:6d} {r['errors']:6d}")


if __name__ == "__main__":
    main()
