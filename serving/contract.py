"""What the pipeline's export and the service agree on, defined once: the names of
the BentoML model, the registered MLflow model and its alias, the default
tracking store, the serving requirements, and the one way a generator enters
the BentoML store (a SavedModel folder and its model card).

The pipeline imports this module; nothing here imports `pipeline/`, and the
model card is what travels between the two.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

BENTO_MODEL = "mnist_gan_generator"
# The registry's model of generators; another name keeps a separate line of versions and champion.
REGISTERED_MODEL = os.environ.get("MNIST_GAN_REGISTERED_MODEL", "mnist-gan-generator")
CHAMPION = "champion"
# What the served model needs installed: the Bento's and the logged pyfunc's requirements.
REQUIREMENTS = Path(__file__).with_name("requirements.txt")
CARD = "model_card.json"
SAVED_MODEL = "saved_model"


def project_root(start: Path | None = None) -> Path:
    """The repo a command runs for, also from a `dvc exp run --temp` or queue copy
    (DVC sets DVC_ROOT to the parent repo for those)."""
    if os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"]).resolve()
    start = (start or Path.cwd()).resolve()
    parts = start.parts
    for i in range(len(parts) - 2):
        if parts[i:i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return start


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI, else the project's embedded store `mlflow.db` (an absolute path)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root() / 'mlflow.db'}"


def store(saved_model: Path, card: dict | Path, tag: str = BENTO_MODEL) -> str:
    """Put a generator into this machine's BentoML store (BENTOML_HOME): the SavedModel
    folder and its model card (a mapping, or the card's file), labelled from the card.
    `tag` is the model's name (a new version) or a full `name:version` (that version,
    as another machine stored it). Returns the stored tag."""
    import bentoml

    if not isinstance(card, dict):
        card = json.loads(Path(card).read_text())
    labels = {"mlflow_run_id": str(card.get("mlflow_run_id")), "arch": str(card.get("arch"))}
    if card.get("registered_model"):
        labels["registered_version"] = str(card["registered_model"]["version"])
    with bentoml.models.create(tag, labels=labels, metadata={"z_dim": card["z_dim"],
                                                              "data_sha256": card.get("data_sha256")}) as ref:
        shutil.copytree(saved_model, Path(ref.path) / SAVED_MODEL)
        (Path(ref.path) / CARD).write_text(json.dumps(card, indent=2, sort_keys=True))
    return str(ref.tag)
