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

# Each kind of generator is its own BentoML model and registered model, with its own
# champion, and kinds are never ranked against each other: plain digits, digits drawn on
# request (conditional: the generator takes z and a digit), and Stacked MNIST's three
# stacked digits (RGB). `MNIST_GAN_KIND` picks the kind `make serve` serves.
KINDS = ("digits", "conditional", "stacked")
DIGITS = 10  # a conditional generator's classes: the digits 0-9
BENTO_MODEL = "mnist_gan_generator"
# The registry's model of digit generators, and the stem of the other kinds' names;
# another name keeps separate lines of versions and champions.
REGISTERED_MODEL = os.environ.get("MNIST_GAN_REGISTERED_MODEL", "mnist-gan-generator")
CHAMPION = "champion"
# What the served model needs installed: the Bento's and the logged pyfunc's requirements.
REQUIREMENTS = Path(__file__).with_name("requirements.txt")
CARD = "model_card.json"
SAVED_MODEL = "saved_model"


def check_kind(kind: str, where: str = "MNIST_GAN_KIND") -> str:
    if kind not in KINDS:
        raise ValueError(f"{where}: {kind!r} is not a kind of generator; allowed values: {', '.join(KINDS)}")
    return kind


def served_kind() -> str:
    """The kind `make serve` serves (KIND=, or MNIST_GAN_KIND): digits unless set."""
    return check_kind(os.environ.get("MNIST_GAN_KIND") or "digits")


def bento_model(kind: str = "digits") -> str:
    """The BentoML model name of a kind: mnist_gan_generator, mnist_gan_generator_conditional, ..."""
    return BENTO_MODEL if check_kind(kind, "kind") == "digits" else f"{BENTO_MODEL}_{kind}"


def registered_model(kind: str = "digits") -> str:
    """The registered MLflow model of a kind: mnist-gan-generator, mnist-gan-generator-conditional, ..."""
    return REGISTERED_MODEL if check_kind(kind, "kind") == "digits" else f"{REGISTERED_MODEL}-{kind}"


def kind_of(card: dict) -> str:
    """A model card's kind; cards written before kinds existed say it by their output's channels."""
    if card.get("kind"):
        return check_kind(card["kind"], "model card kind")
    channels = int(card.get("output", {}).get("shape", [None, 28, 28, 1])[-1])
    return "stacked" if channels == 3 else "digits"


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


def store(saved_model: Path, card: dict | Path, tag: str | None = None) -> str:
    """Put a generator into this machine's BentoML store (BENTOML_HOME): the SavedModel
    folder and its model card (a mapping, or the card's file), labelled from the card.
    `tag` is the model's name (a new version; default: its kind's bento_model) or a full
    `name:version` (that version, as another machine stored it). Returns the stored tag."""
    import bentoml

    if not isinstance(card, dict):
        card = json.loads(Path(card).read_text())
    tag = tag or bento_model(kind_of(card))
    labels = {"mlflow_run_id": str(card.get("mlflow_run_id")), "arch": str(card.get("arch")),
              "kind": kind_of(card)}
    if card.get("registered_model"):
        labels["registered_version"] = str(card["registered_model"]["version"])
    with bentoml.models.create(tag, labels=labels, metadata={"z_dim": card["z_dim"],
                                                              "data_sha256": card.get("data_sha256")}) as ref:
        shutil.copytree(saved_model, Path(ref.path) / SAVED_MODEL)
        (Path(ref.path) / CARD).write_text(json.dumps(card, indent=2, sort_keys=True))
    return str(ref.tag)
