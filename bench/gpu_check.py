"""The seed DCGAN to the quality gate on the accelerator TensorFlow sees.

    python bench/gpu_check.py                          # recipes/dcgan.yaml, train.seed 0
    python bench/gpu_check.py --recipe recipes/dcgan_upsample.yaml --seeds 0 1

Says which devices TensorFlow finds and what `train.precision: auto` resolves
to there, then runs bench/seeds.py with the recipe (prepare, judge, train and
evaluate as the pipeline's own stages, in a work folder) and prints the wall
time of each part and the gate's metrics, and writes them to
docs/results/gpu_check.md (`--results DIR`, `--no-results`; bench/seeds.py writes no
page of its own here). On a machine without a GPU it runs on the CPU and says so.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from bench import results  # noqa: E402


def describe_devices() -> str:
    import tensorflow as tf

    from pipeline.distribution import precision_for

    gpus = tf.config.list_physical_devices("GPU")
    names = []
    for gpu in gpus:
        d = tf.config.experimental.get_device_details(gpu)
        names.append(f"{d.get('device_name', gpu.name)} (compute capability {d.get('compute_capability')})")
    where = ", ".join(names) if names else "no GPU visible: the CPU"
    return (f"TensorFlow {tf.__version__}, built with CUDA: {tf.test.is_built_with_cuda()}; devices: {where}; "
            f"train.precision auto -> {precision_for('auto')}")


def main(argv: list[str] | None = None) -> None:
    import seeds

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", type=Path, default=ROOT / "recipes" / "dcgan.yaml")
    ap.add_argument("--seeds", nargs="+", default=["0"])
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--work", type=Path)
    results.add_arguments(ap)
    args = ap.parse_args(argv)
    say = results.Printout()
    say(describe_devices())
    t0 = time.perf_counter()
    forward = ["--recipe", str(args.recipe), "--seeds", *args.seeds]
    for item in args.set:
        forward += ["--set", item]
    if args.work:
        forward += ["--work", str(args.work)]
    say.keep("\n".join(seeds.main(forward + ["--no-results"])))
    say(f"\nwall time, prepare + judge + every seed's train and evaluate: {time.perf_counter() - t0:.0f} s")
    if args.results is not None:
        results.publish("gpu_check", "The seed DCGAN to the quality gate on the accelerator TensorFlow sees",
                        say.markdown(), argv=argv, out=args.results)


if __name__ == "__main__":
    main()
