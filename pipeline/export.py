"""Stage `export`: freeze the generator for inference and publish it.

    python -m pipeline.export --generator models/generator.keras --metrics reports/metrics.json \
        --data-report reports/data.json --run-file reports/mlflow_run.json --out export

Writes `<out>/generator/` (keras Model.export() SavedModel, `serve`: float32
z (n, z_dim) -> (n, 28, 28, 1) in [-1, 1]) and `<out>/model_card.json`, saves
both to the BentoML store as `mnist_gan_generator` and registers the MLflow
model `mnist-gan-generator`, with the alias `champion` moved to this version
only when the evaluate stage's verdict passed the quality gate.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from pipeline import atomic, tracking
from pipeline.errors import StageError, run_stage

BENTO_MODEL = "mnist_gan_generator"
REGISTERED_MODEL = "mnist-gan-generator"
CHAMPION = "champion"
PYFUNC_CODE = Path(__file__).with_name("mlflow_model.py")


def model_card(generator, run: dict, metrics: dict, data_report: dict, train_params: dict,
               verdict: dict | None = None) -> dict:
    return {
        "name": BENTO_MODEL,
        "z_dim": int(generator.input_shape[-1]),
        "input": {"name": "z", "dtype": "float32", "shape": [None, int(generator.input_shape[-1])],
                  "distribution": "standard normal"},
        "output": {"dtype": "float32", "shape": [None, 28, 28, 1], "range": [-1.0, 1.0]},
        "arch": train_params.get("train.arch"),
        "loss": train_params.get("train.loss"),
        "params": train_params,
        "metrics": metrics,
        "verdict": {k: (verdict or {}).get(k) for k in
                    ("mode_collapse", "memorization", "quality_gate_passed", "reasons")},
        "mlflow_run_id": run["run_id"],
        "data_sha256": data_report.get("data_sha256"),
    }


def export_saved_model(generator, target: Path) -> None:
    with atomic.atomic_dir(target) as tmp:
        # Model.export writes into a fresh folder of its own.
        generator.export(str(tmp / "m"), format="tf_saved_model", verbose=False)
        for item in (tmp / "m").iterdir():
            shutil.move(str(item), tmp / item.name)
        (tmp / "m").rmdir()


def save_to_bentoml(saved_model: Path, card: dict):
    import bentoml

    with bentoml.models.create(
        BENTO_MODEL,
        labels={"mlflow_run_id": card["mlflow_run_id"], "arch": str(card["arch"])},
        metadata={"z_dim": card["z_dim"], "data_sha256": card["data_sha256"]},
    ) as ref:
        shutil.copytree(saved_model, Path(ref.path) / "saved_model")
        (Path(ref.path) / "model_card.json").write_text(json.dumps(card, indent=2, sort_keys=True))
    return ref.tag


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--generator", required=True)
    ap.add_argument("--metrics", required=True)
    ap.add_argument("--verdict", required=True, help="the evaluate stage's verdict.json")
    ap.add_argument("--data-report", required=True)
    ap.add_argument("--run-file", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    from pipeline.evaluate import load_generator

    generator = load_generator(args.generator)
    run = json.loads(Path(args.run_file).read_text())
    metrics = json.loads(Path(args.metrics).read_text())
    verdict = json.loads(Path(args.verdict).read_text())
    data_report = json.loads(Path(args.data_report).read_text())
    out = Path(args.out)

    with tracking.run(args.run_file) as active:
        import mlflow
        import numpy as np

        train_params = {k: v for k, v in active.data.params.items() if k.startswith("train.")}
        card = model_card(generator, run, metrics, data_report, train_params, verdict)
        export_saved_model(generator, out / "generator")
        atomic.write_json(out / "model_card.json", card)

        tag = save_to_bentoml(out / "generator", card)
        mlflow.set_tag("bentoml_tag", str(tag))
        mlflow.log_dict(card, "model_card.json")
        z = np.zeros((1, card["z_dim"]), np.float32)
        info = mlflow.pyfunc.log_model(
            name="generator",
            python_model=str(PYFUNC_CODE),
            artifacts={"saved_model": str(out / "generator")},
            input_example=z,
            pip_requirements=["tensorflow-cpu==2.21.0", "numpy"],
            registered_model_name=REGISTERED_MODEL,
        )
        version = info.registered_model_version
        mlflow.set_tag("registered_model_version", str(version))
        if verdict.get("quality_gate_passed") is True:
            mlflow.MlflowClient().set_registered_model_alias(REGISTERED_MODEL, CHAMPION, version)
    gate = "passed the gate: alias champion" if verdict.get("quality_gate_passed") is True else \
        "did not pass the gate: champion alias unchanged"
    print(f"export: {out / 'generator'}; bentoml {tag}; mlflow {REGISTERED_MODEL} v{version} ({gate})")


if __name__ == "__main__":
    run_stage(main)
