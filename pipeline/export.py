"""Stage `export`: freeze the generator for inference, publish it and decide
whether it becomes the champion.

    python -m pipeline.export --generator models/generator.keras --metrics reports/metrics.json \
        --verdict reports/eval/verdict.json --protocol reports/eval/protocol.json \
        --data-report reports/data.json --training-run reports/train/run.json \
        --run-file reports/mlflow_run.json --out export

Writes `<out>/generator/` (a SavedModel whose `serve` takes float32 z (n, z_dim),
and int32 digits (n,) for a conditional generator, and returns (n, 28, 28, c) in
[-1, 1]) and `<out>/model_card.json`; registers the MLflow model of the
generator's kind (contract.registered_model: digits, conditional or stacked, each
with its own champion) from the result's run, saves the SavedModel and card to
the BentoML store (contract.store), and moves that model's alias `champion` to
this version only when `decide` says so (docs/experiments.md#promotion): it passes the gate and beats the champion on the
ranking, under the same evaluation protocol. The comparison is recorded in the
run (`promotion.json`, `promotion.*` tags) and on the version.

A try that fails on the way (the object store or the tracking server gone) fails
in one line. MLflow registers a version only once all its files are stored, and
a rerun of the same run and files takes the version an earlier try registered
(tagged `export_digest`), so a run registers once; its decision stands if it is
champion, and is made again against the champion now if it is not.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
from pathlib import Path

from pipeline import atomic, tracking
from pipeline.errors import run_stage
from serving import contract

PYFUNC_CODE = Path(__file__).with_name("mlflow_model.py")
# The ranking, in order: the first metric that differs decides.
RANKING = (("fcd", "lower"), ("classifier_score_ratio", "higher"))
# The version tag that names what a version was registered from: the run's files and code.
DIGEST_TAG = "export_digest"
# MLflow's retries of each request (its default, 7, backs off for minutes): fewer, so that a
# store that is down stops the stage in one line while the user is still there; a rerun is
# safe, as it registers once. A value set in the environment wins.
HTTP_RETRIES = 3


def kind_of(generator) -> str:
    """contract.KINDS: conditional (it takes a digit), stacked (three channels), else digits."""
    from pipeline.models import digit_input

    if digit_input(generator) is not None:
        return "conditional"
    return "stacked" if int(generator.output_shape[-1]) == 3 else "digits"


def model_card(generator, run: dict, metrics: dict, data_report: dict, train_params: dict,
               verdict: dict | None = None, protocol: dict | None = None) -> dict:
    from pipeline.models import z_dim_of

    kind, z_dim = kind_of(generator), z_dim_of(generator)
    card = {
        "name": contract.bento_model(kind),
        "kind": kind,
        "conditional": kind == "conditional",
        "z_dim": z_dim,
        "input": {"name": "z", "dtype": "float32", "shape": [None, z_dim], "distribution": "standard normal"},
        "output": {"dtype": "float32", "shape": [None, *map(int, generator.output_shape[1:])], "range": [-1.0, 1.0]},
        "arch": train_params.get("train.arch"),
        "loss": train_params.get("train.loss"),
        # What the training computed in; the exported generator computes in float32 either way.
        "training_precision": train_params.get("train.precision"),
        "params": train_params,
        "metrics": metrics,
        "verdict": {k: (verdict or {}).get(k) for k in
                    ("mode_collapse", "memorization", "quality_gate_passed", "reasons")},
        "mlflow_run_id": run["run_id"],
        "mlflow_run_name": run.get("name"),
        "training_run_id": run.get("training_run_id"),
        "eval_protocol": (protocol or {}).get("id"),
        "data_sha256": data_report.get("data_sha256"),
    }
    if card["conditional"]:
        # The SavedModel's serve(z, digit): one digit per z, the class it draws.
        card["digit_input"] = {"name": "digit", "dtype": "int32", "shape": [None]}
        card["classes"] = list(range(contract.DIGITS))
    return card


def _beats(challenger: dict, champion: dict) -> tuple[bool, str]:
    """Challenger against champion on RANKING: (wins, the comparison in words)."""
    for key, better in RANKING:
        a, b = float(challenger[key]), float(champion[key])
        if a != b:
            wins = a < b if better == "lower" else a > b
            return wins, f"{key} {a:.6g} {'<' if a < b else '>'} {b:.6g} of champion v{champion['version']}"
    return False, f"ties champion v{champion['version']} on {', '.join(k for k, _ in RANKING)}"


def decide(challenger: dict, champion: dict | None) -> dict:
    """Whether `challenger` (its version, gate, protocol and RANKING metrics) takes
    the alias from `champion` (the same keys, or None): a pure function. Both are of
    one kind (contract.KINDS): each kind has its own registered model and champion."""
    before = champion["version"] if champion else None
    if not challenger["quality_gate_passed"]:
        return {"promote": False, "champion_before": before,
                "reason": "did not pass the quality gate: " + "; ".join(challenger.get("reasons") or [])}
    if champion is None:
        return {"promote": True, "champion_before": None, "reason": "the first version to pass the quality gate"}
    if challenger["eval_protocol"] != champion.get("eval_protocol"):
        return {"promote": False, "champion_before": before,
                "reason": f"champion v{before} was scored under another evaluation protocol "
                          f"({champion.get('eval_protocol')} vs {challenger['eval_protocol']}: another judge, "
                          "data or draw), so the two cannot be ranked; move the alias by hand to serve this one"}
    missing = [k for k, _ in RANKING if not math.isfinite(float(champion.get(k, "nan")))]
    if missing:
        return {"promote": True, "champion_before": before,
                "reason": f"champion v{before} has no {', '.join(missing)} recorded"}
    wins, how = _beats(challenger, champion)
    return {"promote": wins, "champion_before": before, "reason": how}


def promote(registered: str, challenger: dict, publish=lambda decision: {}) -> tuple[dict, dict | None, dict]:
    """Decide `challenger` (decide's keys) against the champion of `registered` and record
    it, holding the registry lock that every exporter on every machine takes, so that
    the alias ends where one-at-a-time exports would leave it, however many run at once.
    `publish(decision)` runs before the alias moves and returns more tags for the version.
    Each version is tagged with its decision's reason; a champion that loses the alias
    gets `superseded_by`. Returns (decision, the champion it was compared with, the tags)."""
    with tracking.registry_lock(registered):
        current = tracking.champion(registered)
        champ = None if current is None else {"version": current["version"], **current["tags"]}
        earlier = tracking.version_tags(challenger["version"], registered)
        done = "promotion" in earlier and current is not None and current["version"] == str(challenger["version"])
        if done:
            # An earlier try of this export promoted it, then failed: that decision stands, as
            # deciding again would rank the champion against itself.
            decision = {"promote": True, "champion_before": earlier.get("champion_before"),
                        "reason": earlier["promotion"]}
            champ = None if decision["champion_before"] is None else {"version": decision["champion_before"]}
        else:
            # Never decided, or decided without the alias moving (a try that stopped between the
            # two, or a champion that came since): decided now, against the champion now.
            decision = decide(challenger, champ)
        tags = {**publish(decision), "quality_gate_passed": challenger["quality_gate_passed"],
                "eval_protocol": challenger["eval_protocol"], "promotion": decision["reason"],
                "promoted": decision["promote"], **{k: challenger[k] for k, _ in RANKING}}
        if decision["champion_before"] is not None:
            tags["champion_before"] = decision["champion_before"]
        tracking.tag_version(challenger["version"], tags, registered)
        if decision["promote"] and not done:
            tracking.set_champion(challenger["version"], registered)
            if champ is not None:
                tracking.tag_version(champ["version"], {"superseded_by": challenger["version"]}, registered)
    return decision, champ, tags


def digest(generator: str | Path, card: dict) -> str:
    """What a registered version is made of: the generator's bytes, the pyfunc's code and
    requirements, and the card (the run, its metrics and params)."""
    h = hashlib.sha256()
    for path in (Path(generator), PYFUNC_CODE, Path(contract.REQUIREMENTS)):
        h.update(path.read_bytes())
    h.update(json.dumps(card, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def pyfunc_example(card: dict):
    """The logged pyfunc's input example: one z of zeros (and digit 0, conditional)."""
    import numpy as np

    z = np.zeros((1, card["z_dim"]), np.float32)
    return {"z": z, "digit": np.zeros(1, np.int32)} if card["conditional"] else z


def export_saved_model(generator, target: Path) -> None:
    """The SavedModel's `serve` endpoint: `serve(z)` with z (n, z_dim) float32, and for a
    conditional generator `serve(z, digit)` with digit (n,) int32; both return
    (n, 28, 28, c) float32 in [-1, 1]."""
    from pipeline.models import digit_input, z_dim_of

    with atomic.atomic_dir(target) as tmp:
        # Keras writes into a fresh folder of its own.
        at = digit_input(generator)
        if at is None:
            generator.export(str(tmp / "m"), format="tf_saved_model", verbose=False)
        else:
            import keras
            import tensorflow as tf

            archive = keras.export.ExportArchive()
            archive.track(generator)
            archive.add_endpoint(
                "serve", lambda z, digit: generator([digit, z] if at == 0 else [z, digit], training=False),
                input_signature=[tf.TensorSpec((None, z_dim_of(generator)), tf.float32, name="z"),
                                 tf.TensorSpec((None,), tf.int32, name="digit")])
            archive.write_out(str(tmp / "m"), verbose=False)
        for item in (tmp / "m").iterdir():
            shutil.move(str(item), tmp / item.name)
        (tmp / "m").rmdir()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--generator", required=True)
    ap.add_argument("--metrics", required=True)
    ap.add_argument("--verdict", required=True, help="the evaluate stage's verdict.json")
    ap.add_argument("--protocol", required=True, help="the evaluate stage's protocol.json")
    ap.add_argument("--data-report", required=True)
    ap.add_argument("--training-run", required=True, help="the train stage's record (its params go in the card)")
    ap.add_argument("--run-file", required=True, help="the result's MLflow run (the evaluate stage's)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(HTTP_RETRIES))

    from pipeline.models import load_generator

    generator = load_generator(args.generator)
    run, training, metrics, verdict, protocol, data_report = (
        json.loads(Path(f).read_text()) for f in (args.run_file, args.training_run, args.metrics, args.verdict,
                                                   args.protocol, args.data_report))
    train_params = {k: v for k, v in training.get("params", {}).items() if k.startswith("train.")}
    card = model_card(generator, run, metrics, data_report, train_params, verdict, protocol)
    out = Path(args.out)

    registered = contract.registered_model(card["kind"])
    made_of = digest(args.generator, card)
    with tracking.reopen(run) as active:
        export_saved_model(generator, out / "generator")
        version = tracking.registered_from(run["run_id"], DIGEST_TAG, made_of, registered)
        if version is not None:
            print(f"export: {registered} v{version} was registered from this run and these files by an "
                  "earlier try; taking it")
        else:
            version = active.log_pyfunc_model(
                name="generator",
                python_model=str(PYFUNC_CODE),
                artifacts={contract.SAVED_MODEL: str(out / "generator")},
                input_example=pyfunc_example(card),
                pip_requirements=str(contract.REQUIREMENTS),
                registered_model_name=registered,
                tags={DIGEST_TAG: made_of},  # on the version as it is created: no untagged moment
            )
        card["registered_model"] = {"name": registered, "version": version}
        challenger = {"version": version, "quality_gate_passed": verdict.get("quality_gate_passed") is True,
                      "reasons": verdict.get("reasons"), "eval_protocol": protocol["id"],
                      **{k: metrics[k] for k, _ in RANKING}}

        def publish(decision: dict) -> dict:
            """The card with the decision, into the BentoML store: before the alias moves."""
            card["promotion"] = decision
            atomic.write_json(out / contract.CARD, card)
            return {"bentoml_tag": contract.store(out / "generator", card)}

        decision, champ, tags = promote(registered, challenger, publish)
        tag = tags["bentoml_tag"]
        active.set_tags({"bentoml_tag": tag, "registered_model_version": version,
                         "promotion.promoted": decision["promote"], "promotion.reason": decision["reason"],
                         "promotion.champion_before": decision["champion_before"]})
        active.log_dict(card, contract.CARD)
        active.log_dict({"challenger": challenger, "champion": champ, **decision}, "promotion.json")
    verb = "now champion" if decision["promote"] else "champion unchanged"
    print(f"export: {out / 'generator'}; bentoml {tag}; mlflow {registered} v{version} "
          f"({verb}: {decision['reason']})")


if __name__ == "__main__":
    run_stage(main)
