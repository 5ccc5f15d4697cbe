"""Which stored generator the service loads.

    python -m serving.selection [--tag] [champion|latest|<bentoml tag>]

prints the choice in one line (what `make serve` does first), or why there is
none, with exit status 1; `--tag` prints only the stored tag it resolves to
(what `make bento` packs).

`champion` and `latest` are of the kind `MNIST_GAN_KIND` names (`make serve
KIND=`; contract.KINDS, default digits): each kind has its own BentoML model
and registered model, so its own champion.

- `champion` (the default): the version the MLflow registry's alias
  `champion` names on the kind's registered model (contract.registered_model),
  found through `MLFLOW_TRACKING_URI` (default: the project's `mlflow.db`,
  contract.tracking_uri); the export stage tags each registered version
  with its BentoML tag and the reason for its promotion. A champion missing
  from this machine's BentoML store (exported on another machine, against a
  shared tracking server) is copied into it from the registry first, under
  the same tag.
- `latest`: the newest export of the kind in the BentoML store
  (contract.bento_model), asked for by name.
- anything else: a BentoML tag, `mnist_gan_generator:<version>`, served
  whatever its kind (its model card says which).

A kind that is not one of contract.KINDS is an error naming MNIST_GAN_KIND and
the allowed values, whatever the selector. MLflow is imported only for
`champion`; nothing here imports `pipeline/`.
"""
from __future__ import annotations

import sys
from pathlib import Path

from serving import contract
from serving.contract import CHAMPION, tracking_uri


def how_to(kind: str) -> str:
    """How to serve another model than the one missing, for a kind."""
    make_kind = "" if kind == "digits" else f"KIND={kind} "
    return (f"serve another explicitly: make serve {make_kind}MODEL=latest, or MODEL=<tag> "
            "(bentoml models list); or bentoml serve ... --arg model=latest")


class NoChampion(Exception):
    """No version holds the alias, or no registry to ask."""


def champion(kind: str = "digits") -> tuple[str, dict]:
    name, how = contract.registered_model(kind), how_to(kind)
    uri = tracking_uri()
    db = Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None
    # An empty file is no store either (opening it would create one: a read must not write).
    if db is not None and (not db.is_file() or db.stat().st_size == 0):
        raise NoChampion(f"no champion: no MLflow store at {db} (MLFLOW_TRACKING_URI); {how}")
    import logging

    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)  # schema upgrade notes

    try:
        mv = MlflowClient(uri).get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        raise NoChampion(f"no champion yet: no version of {name} has passed the quality gate "
                         f"and the ranking; {how}") from None
    tag = mv.tags.get("bentoml_tag")
    if not tag:
        raise NoChampion(f"champion {name} v{mv.version} has no bentoml_tag; {how}")
    fetched = _ensure_stored(tag, mv, name, how)
    return tag, {"by": CHAMPION, "kind": kind, "registered_model": name, "version": str(mv.version),
                 "reason": f"alias {CHAMPION} of {name} -> v{mv.version}; promoted because: "
                           f"{mv.tags.get('promotion', 'set by hand')}"
                           + ("; copied from the registry into this machine's BentoML store" if fetched else "")}


def champion_now(name: str, served: str | None) -> dict:
    """Where the alias of registered model `name` points now, for a server that loaded
    version `served` (None: a version of no registered model): `version` (None: no
    champion), `newer` (it names another version than the one served), or `error` when
    the registry cannot be read. A read only: a running server keeps serving its version."""
    uri = tracking_uri()
    db = Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None
    if db is not None and (not db.is_file() or db.stat().st_size == 0):
        return {"version": None, "newer": False}
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        version = str(MlflowClient(uri).get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException as exc:
        # No such model, or no alias on it: no champion. Anything else (an unreachable
        # server) is said, and /info still answers.
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return {"version": None, "newer": False}
        return {"version": None, "newer": False, "error": str(exc).splitlines()[0][:300]}
    except Exception as exc:
        return {"version": None, "newer": False, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    return {"version": version, "newer": version != served}


def _ensure_stored(tag: str, mv, name: str, how: str) -> bool:
    """Puts the champion into the local BentoML store, from the registered
    version's files (the SavedModel) and its run's model card, unless the
    store holds it already. True when it copied it."""
    import tempfile

    import bentoml
    import mlflow.artifacts
    import yaml
    from bentoml.exceptions import NotFound

    try:
        bentoml.models.get(tag)
        return False
    except NotFound:
        pass
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(mlflow.artifacts.download_artifacts(
            f"models:/{name}/{mv.version}", dst_path=f"{tmp}/model", tracking_uri=tracking_uri()))
        card_file = Path(mlflow.artifacts.download_artifacts(
            run_id=mv.run_id, artifact_path=contract.CARD, dst_path=f"{tmp}/card", tracking_uri=tracking_uri()))
        # The pyfunc's artifact `saved_model`, where its MLmodel says the logged files are.
        flavor = yaml.safe_load((model_dir / "MLmodel").read_text())["flavors"]["python_function"]
        saved = model_dir / flavor.get("artifacts", {}).get(contract.SAVED_MODEL, {}).get(
            "path", f"artifacts/{contract.SAVED_MODEL}")
        if not (saved / "saved_model.pb").is_file():
            raise NoChampion(f"champion {name} v{mv.version} holds no SavedModel "
                             f"(its pyfunc artifact {contract.SAVED_MODEL}); {how}")
        contract.store(saved, card_file, tag)
    return True


def resolve(selector: str) -> tuple[str, dict]:
    """(BentoML tag, how it was chosen) for `champion`, `latest` or a tag; `champion` and
    `latest` of the kind MNIST_GAN_KIND names. ValueError for a kind not in contract.KINDS."""
    kind = contract.served_kind()
    if selector == CHAMPION:
        return champion(kind)
    if selector == "latest":
        return f"{contract.bento_model(kind)}:latest", {
            "by": "latest", "kind": kind, "reason": f"asked for by name: the newest stored export of kind {kind}"}
    return selector, {"by": "tag", "reason": f"asked for by tag {selector}"}


def main(argv: list[str]) -> int:
    only_tag = "--tag" in argv
    rest = [a for a in argv if a != "--tag"]
    selector = rest[0] if rest else CHAMPION
    try:
        tag, how = resolve(selector)
    except (NoChampion, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if only_tag:
        import bentoml

        print(bentoml.models.get(tag).tag)
    else:
        print(f"serving {tag}: {how['reason']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
