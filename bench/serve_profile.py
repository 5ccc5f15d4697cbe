"""Where a request's time goes in the service's worker, under load.

    python bench/serve_profile.py                    # seed 001 DCGAN, c=32, JSON
    python bench/serve_profile.py --arch mlp --accept application/x-npy --seconds 15

Serves an untrained generator of the arch (as bench/serve_throughput.py does),
drives `/generate` with the same asyncio client at one concurrency level, and
samples each worker process of `bentoml serve` with py-spy (100 Hz, idle frames
left out) while the load runs. Prints the request rate, then the share of the
worker's busy samples per layer of the request path (each sample counted once,
by the innermost frame that belongs to one of them, so the shares add up to
100%): the model itself (TensorFlow), JSON (decoding the body, encoding the
answer), validation (pydantic), BentoML's batching and dispatch, the HTTP
stack (uvicorn, starlette, h11/httptools), asyncio's loop, and our own code
(serving/), then the 25 functions with the most samples of their own. All of it
goes to docs/results/serve_profile.md too (`--results DIR`, `--no-results`).
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from bench import results  # noqa: E402
from pipeline import archs  # noqa: E402

# (layer, substrings of a frame's file); the first layer a sample's innermost matching frame names.
LAYERS = (
    ("model (tensorflow)", ("tensorflow/", "keras/")),
    ("json", ("json/", "orjson", "ujson", "/json.py")),
    ("validation (pydantic)", ("pydantic",)),
    ("our code (serving/)", ("serving/",)),
    ("bentoml batching and dispatch", ("bentoml/", "_bentoml_impl/", "_bentoml_sdk/")),
    ("http (uvicorn, starlette, h11)", ("uvicorn/", "starlette/", "h11/", "httptools", "fastapi/", "anyio/")),
    ("asyncio loop", ("asyncio/", "uvloop")),
)


def layer_of(stack: list[str]) -> str:
    for frame in reversed(stack):  # innermost first
        for name, needles in LAYERS:
            if any(n in frame for n in needles):
                return name
    return "other"


def main(argv: list[str] | None = None) -> None:
    import serve_throughput as st

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", choices=archs.NAMES, default="dcgan")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--accept", default="application/json", choices=sorted(st.MODES.values()))
    ap.add_argument("--seconds", type=float, default=12.0)
    results.add_arguments(ap)
    args = ap.parse_args(argv)
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        raise SystemExit("py-spy is not installed: pip install -e '.[dev]'")

    tmp = Path(tempfile.mkdtemp(prefix="serve-profile-"))
    os.environ["BENTOML_HOME"] = str(tmp / "bentoml")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env = dict(os.environ, PYTHONPATH=str(ROOT), BENTOML_DO_NOT_TRACK="true",
               MLFLOW_TRACKING_URI=f"sqlite:///{tmp / 'mlflow.db'}")
    tag, _ = st.store(args.arch, 100, tmp)
    proc, url = st.bentoml_serve("serving.service:Generator", dict(env, MNIST_GAN_MODEL=tag), tmp / "serve.log")
    try:
        bodies = st.z_bodies(100, "z")
        asyncio.run(st.load(f"{url}/generate", bodies, 8, 3.0, args.accept))  # warm-up, batching calibration
        import psutil

        # BentoML's workers are processes of their own under the server's arbiter; each
        # gets its own py-spy (--subprocesses on the server alone did not reach them).
        workers = [c for c in psutil.Process(proc.pid).children(recursive=True)
                   if "worker" in " ".join(c.cmdline())]
        if not workers:
            raise SystemExit("no BentoML worker process found under the server")
        records = []
        for w in workers:
            raw = tmp / f"profile-{w.pid}.txt"
            records.append((w, raw, subprocess.Popen(
                [spy, "record", "--pid", str(w.pid), "--rate", "100", "--duration", str(int(args.seconds)),
                 "--format", "raw", "--output", str(raw), "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)))
        result = {}
        loader = threading.Thread(target=lambda: result.update(
            asyncio.run(st.load(f"{url}/generate", bodies, args.concurrency, args.seconds, args.accept))))
        loader.start()
        loader.join()
        for w, raw, rec in records:
            _, err = rec.communicate(timeout=120)
            if rec.returncode != 0 or not raw.exists():
                raise SystemExit(f"py-spy on worker {w.pid} failed: {err[-2000:]}")
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(60)

    per_process: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    own: collections.Counter = collections.Counter()
    for w, raw, _ in records:
        for line in raw.read_text().splitlines():
            stack_text, _, count = line.rpartition(" ")
            frames = stack_text.split(";")
            stack, n = frames[1:], int(count)  # frames[0] names the process
            per_process[f"worker {w.pid}"][layer_of(stack)] += n
            if stack:
                own[stack[-1]] += n
    say = results.Printout()
    say(f"{args.arch}, c={args.concurrency}, Accept {args.accept}: {result['rps']:.1f} req/s, "
        f"p50 {result['p50'] * 1e3:.1f} ms, p99 {result['p99'] * 1e3:.1f} ms over {args.seconds:g} s")
    if not per_process:
        raise SystemExit("no worker samples")
    for process, layers in per_process.items():
        total = sum(layers.values())
        say(f"\n{process[:100]}: {total} busy samples ({total / args.seconds / 100:.0%} of one core)")
        for name, n in layers.most_common():
            say(f"  {name:<34} {n / total:6.1%}")
    say("\nfunctions with the most samples of their own (all worker processes):")
    for frame, n in own.most_common(25):
        say(f"  {n:6d}  {results.portable(frame)[:150]}")
    if args.results is not None:
        results.publish("serve_profile", "Where a request's time goes in the service's worker", say.markdown(),
                        argv=argv, out=args.results)


if __name__ == "__main__":
    main()
