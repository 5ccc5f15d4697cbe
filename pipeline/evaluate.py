"""Stage `evaluate`: sample the generator and score memorization and diversity.

    python -m pipeline.evaluate --params params.yaml --generator models/generator.keras \
        --data data/prepared/mnist.npz --metrics reports/metrics.json --run-file reports/mlflow_run.json
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from pipeline import atomic, data, images, metrics, params, tracking
from pipeline.errors import StageError, run_stage


def sample(generator, n: int, seed: int, batch: int = 500) -> np.ndarray:
    """n images from N(0, I) latents as 8-bit pixels (n, 28, 28)."""
    z_dim = generator.input_shape[-1]
    z = np.random.default_rng(seed).standard_normal((n, z_dim)).astype(np.float32)
    out = [images.to_uint8(generator.predict_on_batch(z[i:i + batch])) for i in range(0, n, batch)]
    return np.concatenate(out)


def real_subset(x: np.ndarray, n: int, seed: int) -> np.ndarray:
    """At most n held-out images, drawn without replacement."""
    if len(x) <= n:
        return x
    return x[np.sort(np.random.default_rng(seed).choice(len(x), n, replace=False))]


def evaluate(generator, ds: data.Mnist, p: params.EvaluateParams) -> dict[str, float]:
    gen = sample(generator, p.num_samples, p.seed)
    real = real_subset(ds.x_test, p.num_samples, p.seed)
    if len(real) < 2:
        raise StageError("evaluate: the prepared test split needs at least two images")
    m = metrics.l1_report(gen, real, ds.x_train)
    m["num_generated"] = len(gen)
    m["num_real"] = len(real)
    return m


def load_generator(path: str | Path):
    import keras

    path = Path(path)
    if not path.is_file():
        raise StageError(f"{path}: generator not found")
    model = keras.models.load_model(path, compile=False)
    if len(model.input_shape) != 2 or tuple(model.output_shape[1:]) != (28, 28, 1):
        raise StageError(f"{path}: expected a generator (n, z_dim) -> (n, 28, 28, 1), "
                         f"got {model.input_shape} -> {model.output_shape}")
    return model


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--generator", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--metrics", required=True)
    ap.add_argument("--run-file", required=True)
    args = ap.parse_args(argv)

    p = params.load("evaluate", args.params)
    generator = load_generator(args.generator)
    ds = data.load_prepared(args.data)
    with tracking.run(args.run_file):
        import mlflow

        mlflow.log_params({f"evaluate.{k}": v for k, v in p.model_dump().items()})
        m = evaluate(generator, ds, p)
        mlflow.log_metrics({k: float(v) for k, v in m.items()})
        atomic.write_json(args.metrics, m)
    print("evaluate: " + ", ".join(f"{k}={v:.4g}" for k, v in m.items()))


if __name__ == "__main__":
    run_stage(main)
