"""Training throughput: this project's compiled fit() step against a seed-style
loop (`predict` + `train_on_batch` in Python: seed 004's for the MLP, seed
002's for the conv nets) on the same models, batch and images per step,
measured in one run (each loop in its own process); also FLOPs per image and
achieved GFLOP/s next to a large matmul's rate.

    python bench/train_throughput.py [--archs mlp dcgan ...] [--batch-sizes 64 256]
                                     [--seconds 2] [--repeats 3] [--processes 3]
                                     [--results DIR | --no-results]

Our loop runs in both precisions (`train.precision` float32 and bfloat16,
Keras' mixed_bfloat16), side by side; the seed-style loop in float32, as the
seeds ran. The `ratio` is ours in float32 against it.

Without --archs every registered arch runs (pipeline.archs); without
--batch-sizes each runs at 64 and at params.yaml's batch. Each timed window is
about --seconds long (its steps set from a warm-up step's time), so fast and
slow archs are timed alike. `ceiling` is the ratio a step running
at the large matmul's rate would reach: where the seed-style loop is itself
mostly compute (large batches), no loop can be 5x faster on that machine.

Each loop runs in --processes fresh processes, alternating with the other
loop, and the median over them is printed: a process now and then runs its
convolutions at half speed throughout, so one process per loop is not enough.
The table goes to docs/results/train_throughput.md too (bench/results.py).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pipeline import archs, params, train  # noqa: E402  (first: it sets TensorFlow's environment, oneDNN on, before TF loads)
from pipeline.models import build_discriminator, build_generator  # noqa: E402
from bench import results  # noqa: E402,I001

import keras  # noqa: E402,I001
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def forward_flops(model: keras.Model) -> int:
    """Multiply-adds x 2 of Dense, Conv2D and Conv2DTranspose layers for one image."""
    total = 0
    for layer in model.layers:
        kind = layer.__class__.__name__
        if kind == "Dense":
            total += 2 * layer.kernel.shape[0] * layer.kernel.shape[1]
        elif kind in ("Conv2D", "Conv2DTranspose"):
            kh, kw, a, b = layer.kernel.shape  # Conv2D: (kh, kw, in, out); transpose: (kh, kw, out, in)
            if kind == "Conv2D":
                h, w = layer.output.shape[1:3]
            else:
                h, w = layer.input.shape[1:3]  # each input pixel scatters a kernel
            total += 2 * h * w * kh * kw * a * b
    return int(total)


def step_flops(g: keras.Model, d: keras.Model) -> int:
    """One GAN step per image, backward ~ 2x forward: D step (G fwd, D fwd+bwd on real and fake),
    G step (G fwd+bwd, D fwd+bwd)."""
    gf, df = forward_flops(g), forward_flops(d)
    return gf + 2 * 3 * df + 3 * gf + 3 * df


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))
    tf.matmul(a, b).numpy()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        tf.matmul(a, b).numpy()
        times.append(time.perf_counter() - t)
    return 2 * n ** 3 / statistics.median(times) / 1e9


def window(step_seconds: float, seconds: float) -> int:
    """Steps in a timed window of about `seconds`."""
    return max(1, round(seconds / max(step_seconds, 1e-6)))


def ours(p: params.TrainParams, x: np.ndarray, seconds: float, repeats: int) -> float:
    """The median rate over `repeats` windows of about `seconds` inside one fit(), after 3
    steps of tracing and 3 that size the windows. Timed between steps: the loop is what a
    training run repeats, while a fit() call's start and end happen once per run."""
    gan = train.build(p)
    ds = train.dataset(x, p.batch_size, p.seed)
    marks: list[float] = []

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            marks.append(time.perf_counter())

    warm = 6
    gan.fit(ds, epochs=1, steps_per_epoch=warm, verbose=0, shuffle=False, callbacks=[Clock()])
    steps = window((marks[-1] - marks[2]) / 3, seconds)
    marks.clear()
    gan.fit(ds, epochs=1, steps_per_epoch=1 + steps * repeats, verbose=0, shuffle=False, callbacks=[Clock()])
    rates = [steps * p.batch_size / (marks[(i + 1) * steps] - marks[i * steps]) for i in range(repeats)]
    return statistics.median(rates)


def seed_style(p: params.TrainParams, x: np.ndarray, seconds: float, repeats: int) -> float:
    """The seeds' loop with this project's images per step (n real and n generated
    for D, n for G): seed 004 (the MLP) trains D on the real and generated
    images concatenated, seed 002 (the conv nets) on each in turn."""
    g, d = build_generator(p), build_discriminator(p)
    bce = keras.losses.BinaryCrossentropy(from_logits=True)
    d.compile(optimizer=keras.optimizers.Adam(2e-4), loss=bce)
    z_in = keras.Input((p.z_dim,))
    combined = keras.Model(z_in, d(g(z_in)))
    combined.compile(optimizer=keras.optimizers.Adam(2e-4), loss=bce)
    rng = np.random.default_rng(0)
    real = train.images.from_uint8(x)
    n = p.batch_size
    ones, zeros = np.ones((n, 1), np.float32), np.zeros((n, 1), np.float32)
    both = np.concatenate([ones, zeros])
    concatenated = p.arch == "mlp"

    def step():
        i = rng.integers(0, len(real) - n)
        fake = g.predict(rng.standard_normal((n, p.z_dim)).astype(np.float32), verbose=0)
        if concatenated:  # seed 004: one D batch of real and generated images
            d.train_on_batch(np.concatenate([real[i:i + n], fake]), both)
        else:  # seed 002: D on a real batch, then on a generated one
            d.train_on_batch(real[i:i + n], ones)
            d.train_on_batch(fake, zeros)
        combined.train_on_batch(rng.standard_normal((n, p.z_dim)).astype(np.float32), ones)

    # Each train function captures the trainable weights when first traced:
    # D's with D trainable, the combined model's with D frozen (the seeds' trick).
    d.trainable = True
    d.train_on_batch(*((real[:2 * n], both) if concatenated else (real[:n], ones)))
    d.trainable = False
    combined.train_on_batch(rng.standard_normal((n, p.z_dim)).astype(np.float32), ones)
    for _ in range(3):
        step()
    t = time.perf_counter()
    for _ in range(3):
        step()
    steps = window((time.perf_counter() - t) / 3, seconds)
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(steps):
            step()
        rates.append(steps * p.batch_size / (time.perf_counter() - t))
    return statistics.median(rates)


def repo_params(**changes) -> params.TrainParams:
    return params.load("train", ROOT / "params.yaml", changes)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", nargs="+", choices=archs.NAMES, default=list(archs.NAMES))
    ap.add_argument("--seconds", type=float, default=2.0, help="length of a timed window")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-sizes", nargs="+", type=int, help="default: 64 and params.yaml's train.batch_size")
    ap.add_argument("--processes", type=int, default=3, help="fresh processes per loop; the median is printed")
    ap.add_argument("--child", choices=["float32", "bfloat16", "seed"], help=argparse.SUPPRESS)
    results.add_arguments(ap)
    args = ap.parse_args(argv)
    if args.child:  # one measurement in a fresh process; prints img/s and the matmul rate
        x = np.random.default_rng(0).integers(0, 256, (4096, 28, 28), dtype=np.uint8)
        p = repo_params(arch=args.archs[0], d_arch=None, batch_size=args.batch_sizes[0],
                        precision="float32" if args.child == "seed" else args.child)
        rate = (seed_style if args.child == "seed" else ours)(p, x, args.seconds, args.repeats)
        print(json.dumps({"rate": rate, "peak": matmul_gflops()}))
        return
    # Each loop runs in its own process: an XLA-compiled step left the next model's
    # conv steps in the same process slower.
    say = results.Printout()
    say(f"{'arch':16}{'batch':>6}{'ours img/s':>12}{'bf16 img/s':>12}{'bf16/f32':>9}{'seed-style img/s':>18}"
        f"{'ratio':>8}{'ceiling':>9}{'MFLOP/img':>11}{'GFLOP/s':>9}{'of matmul':>11}{'matmul GFLOP/s':>16}"
        f"  ours f32 / bf16 / seed-style per process")
    sides = ("float32", "bfloat16", "seed")
    batches = args.batch_sizes or sorted({64, repo_params().batch_size})
    for arch in args.archs:
        for batch in batches:
            run = {side: [] for side in sides}
            for _ in range(args.processes):
                for side in sides:
                    out = subprocess.run([sys.executable, __file__, "--child", side, "--archs", arch, "--seconds",
                                          str(args.seconds), "--repeats", str(args.repeats), "--batch-sizes",
                                          str(batch)], check=True, capture_output=True, text=True).stdout
                    run[side].append(json.loads(out.strip().splitlines()[-1]))
            p = repo_params(arch=arch, d_arch=None, batch_size=batch)
            a, h, b = (statistics.median(r["rate"] for r in run[side]) for side in sides)
            peak = statistics.median(r["peak"] for r in run["float32"])
            flops = step_flops(build_generator(p), build_discriminator(p))
            achieved = a * flops / 1e9
            ceiling = peak * 1e9 / flops / b
            spread = " / ".join(" ".join(f"{r['rate']:.0f}" for r in run[side]) for side in sides)
            say(f"{arch:16}{batch:6}{a:12.0f}{h:12.0f}{h / a:8.2f}x{b:18.0f}{a / b:7.2f}x{ceiling:8.1f}x"
                f"{flops / 1e6:11.1f}{achieved:9.1f}{achieved / peak:10.0%}{peak:16.1f}  {spread}")
    if args.results is not None:
        results.publish("train_throughput", "Training throughput: the compiled fit() step against a seed-style loop",
                        say.markdown(), argv=argv, out=args.results)


if __name__ == "__main__":
    main()
