"""Promotion of the registry alias `champion` (pipeline/export.py `decide`):
the pure rule, then the real export stage against a temp MLflow store and
BentoML home, then `serving.selection` and a real `bentoml serve` of the champion."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from e2e_util import ROOT, Served, serving_env
from pipeline.export import decide

PROTOCOL = "abc123def456"
NAME = "mnist-gan-generator"


# 1. The rule, as a pure function --------------------------------------------------------------

def challenger(fcd=10.0, ratio=0.9, gate=True, protocol=PROTOCOL, version="3"):
    return {"version": version, "quality_gate_passed": gate, "reasons": [] if gate else ["fcd=80 > fcd_max=50"],
            "eval_protocol": protocol, "fcd": fcd, "classifier_score_ratio": ratio}


# As they come back from MLflow version tags: strings.
CHAMPION = {"version": "2", "fcd": "10.0", "classifier_score_ratio": "0.9", "eval_protocol": PROTOCOL,
            "quality_gate_passed": "True", "bentoml_tag": "mnist_gan_generator:x"}


@pytest.mark.parametrize("champ", [None, CHAMPION])
def test_gate_failed_is_never_promoted_whatever_the_metrics(champ):
    d = decide(challenger(fcd=0.1, ratio=1.5, gate=False), champ)
    assert d["promote"] is False and d["champion_before"] == (champ and "2")
    assert "quality gate" in d["reason"] and "fcd=80 > fcd_max=50" in d["reason"]


def test_first_passing_version_is_promoted():
    d = decide(challenger(fcd=40.0, ratio=0.91), None)
    assert d == {"promote": True, "champion_before": None, "reason": d["reason"]} and "first" in d["reason"]


def test_better_fcd_is_promoted_and_says_against_what():
    d = decide(challenger(fcd=8.0), CHAMPION)  # 8 < 10, though "8.0" > "10.0" as strings
    assert d["promote"] is True and d["champion_before"] == "2"
    assert "fcd" in d["reason"] and "8" in d["reason"] and "10" in d["reason"] and "v2" in d["reason"]


def test_worse_fcd_keeps_the_champion_even_with_a_higher_ratio():
    d = decide(challenger(fcd=12.0, ratio=0.99), CHAMPION)
    assert d["promote"] is False and d["champion_before"] == "2"
    assert "12" in d["reason"] and "10" in d["reason"] and "v2" in d["reason"]


@pytest.mark.parametrize("ratio, promote", [(0.95, True), (0.85, False)])
def test_equal_fcd_is_decided_by_classifier_score_ratio(ratio, promote):
    d = decide(challenger(fcd=10, ratio=ratio), CHAMPION)
    assert d["promote"] is promote and "classifier_score_ratio" in d["reason"] and str(ratio) in d["reason"]


def test_exact_tie_keeps_the_champion():
    d = decide(challenger(fcd=10, ratio=0.9), CHAMPION)  # 10 == "10.0", 0.9 == "0.9"
    assert d["promote"] is False and d["champion_before"] == "2" and "ties" in d["reason"]


def test_other_protocol_is_not_ranked():
    d = decide(challenger(fcd=0.5, ratio=1.2, protocol="ffff00000000"), CHAMPION)
    assert d["promote"] is False and d["champion_before"] == "2"
    assert "protocol" in d["reason"] and PROTOCOL in d["reason"] and "ffff00000000" in d["reason"]



# What a try that stopped midway leaves, and the rerun that finishes it (in-process, a sqlite store).
AGAIN = {"stopped before the alias moved": ("1", True, "2"),   # champion then: v1; v2 wins, as it did
         "a better champion came since": ("3", False, "3"),   # v3 (fcd 3) beats v2 (fcd 5)
         "promoted before": ("2", True, "2")}                 # nothing left to do: the decision stands


@pytest.mark.parametrize("case", list(AGAIN))
def test_a_rerun_decides_against_the_champion_now_unless_it_is_the_champion(tmp_path, monkeypatch, case):
    from mlflow.tracking import MlflowClient

    from pipeline import export, tracking

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setattr(tracking, "_CLIENT", None)
    client = MlflowClient(tracking.tracking_uri())
    client.create_registered_model(NAME)
    fcds = {"1": 10.0, "2": 5.0, "3": 3.0}
    for v, fcd in fcds.items():
        client.create_model_version(NAME, str(tmp_path / f"v{v}"))
        tracking.tag_version(v, {"fcd": fcd, "classifier_score_ratio": 0.9, "eval_protocol": PROTOCOL,
                                 "quality_gate_passed": True}, NAME)
    # v2's first try decided against v1 and recorded it; where the case says, the alias moved.
    first = decide(challenger(fcd=5.0, version="2"), {**CHAMPION, "version": "1", "fcd": "10.0"})
    assert first["promote"] and first["champion_before"] == "1"
    tracking.tag_version("2", {"promotion": first["reason"], "promoted": True, "champion_before": "1"}, NAME)
    alias_now, promote, alias_after = AGAIN[case]
    tracking.set_champion(alias_now, NAME)

    decision, _, tags = export.promote(NAME, challenger(fcd=5.0, version="2"))
    assert decision["promote"] is promote
    assert tracking.champion(NAME)["version"] == alias_after
    assert tracking.version_tags("2", NAME)["promotion"] == decision["reason"] == tags["promotion"]
    if case == "a better champion came since":
        assert "champion v3" in decision["reason"]
    else:
        assert decision["champion_before"] == "1"
    superseded = {v: t.get("superseded_by") for v in fcds for t in [tracking.version_tags(v, NAME)]}
    # v1 loses the alias to v2 once, by whichever try moved it.
    assert superseded == {"1": "2" if case == "stopped before the alias moved" else None, "2": None, "3": None}


# 2. The export stage, five challengers in a row ------------------------------------------------

# (gate passed, fcd, classifier_score_ratio, protocol id) -> (champion after, promoted, words in the reason)
SEQUENCE = [
    ((False, 5.0, 0.95, PROTOCOL), (None, False, ["quality gate", "too few modes"])),
    ((True, 10.0, 0.9, PROTOCOL), ("2", True, ["first"])),
    ((True, 12.0, 0.95, PROTOCOL), ("2", False, ["12", "10", "v2"])),
    ((True, 8.0, 0.9, PROTOCOL), ("4", True, ["8", "10", "v2"])),
    ((True, 1.0, 0.99, "0therprot0c0l"), ("4", False, ["protocol", PROTOCOL, "0therprot0c0l"])),
]
RERUN = 4  # exported again after the sequence: the champion by then

# One process makes the store's runs and the challengers' files, then runs the export
# stage on each challenger in turn (its main, as `python -m pipeline.export` runs it)
# and reads what the store says right after it: one TensorFlow start instead of six.
_SEQUENCE = """
import contextlib, io, json, sys
from pathlib import Path
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from pipeline import errors, export, params, tracking
from pipeline.models import build_generator

tmp, sequence, name, RERUN = Path(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3], int(sys.argv[4])
build_generator(params.load("train", changes={"arch": "mlp", "z_dim": 8, "virtual_labels": 0})).save(tmp / "generator.keras")
for i, (gate, fcd, ratio, protocol) in enumerate(sequence, 1):
    d = tmp / f"c{i}"
    d.mkdir()
    flat = {"train.arch": "mlp", "train.loss": "bce", "train.z_dim": 8, "train.seed": i}
    with tracking.training_run(flat) as t:
        pass
    with tracking.result_run({"run_id": t.run_id, "params": flat}, {**flat, "evaluate.seed": 0}) as r:
        rec = r.record()
    files = {"metrics": {"fcd": fcd, "classifier_score_ratio": ratio, "quality_gate_passed": float(gate)},
             "verdict": {"mode_collapse": not gate, "memorization": False, "quality_gate_passed": gate,
                         "reasons": [] if gate else ["mode_collapse: too few modes"]},
             "protocol": {"id": protocol}, "data": {"data_sha256": "0" * 64},
             "train_run": {"run_id": t.run_id, "params": flat},
             "mlflow_run": {**rec, "training_run_id": t.run_id}}
    for key, obj in files.items():
        (d / f"{key}.json").write_text(json.dumps(obj))

client = MlflowClient(tracking.tracking_uri())
# Then challenger 4's export once more, as a rerun after a try that failed past its registration.
for i in [*range(1, len(sequence) + 1), RERUN]:
    d = tmp / f"c{i}"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        errors.run_stage(export.main, [
            "--generator", str(tmp / "generator.keras"), "--metrics", str(d / "metrics.json"),
            "--verdict", str(d / "verdict.json"), "--protocol", str(d / "protocol.json"),
            "--data-report", str(d / "data.json"), "--training-run", str(d / "train_run.json"),
            "--run-file", str(d / "mlflow_run.json"), "--out", str(d / "export")])
    run_id = json.loads((d / "mlflow_run.json").read_text())["run_id"]
    try:
        alias = str(client.get_model_version_by_alias(name, "champion").version)
    except MlflowException:
        alias = None
    tags = client.get_run(run_id).data.tags
    version = tags.get("registered_model_version")
    print(json.dumps({
        "stdout": out.getvalue(), "alias": alias, "run_tags": tags, "version": version,
        "versions": len(client.search_model_versions(f"name = '{name}'")),
        "version_tags": dict(client.get_model_version(name, version).tags) if version else {},
        "promotion_json": json.loads(Path(client.download_artifacts(run_id, "promotion.json", str(d))).read_text()),
        "card": json.loads((d / "export/model_card.json").read_text())}), flush=True)
"""


def _env(tmp: Path, db: str = "mlflow.db") -> dict[str, str]:
    env = serving_env(tmp)
    env.update(MLFLOW_TRACKING_URI=f"sqlite:///{tmp / db}", DVC_ROOT=str(tmp))
    env.pop("DVC_EXP_NAME", None)
    env.pop("MNIST_GAN_MODEL", None)
    return env


def _py(args: list[str], env: dict, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def sequence(tmp_path_factory):
    """Each challenger through the export stage, and what the store says right after it."""
    tmp = tmp_path_factory.mktemp("promotion")
    env = _env(tmp)
    proc = _py(["-c", _SEQUENCE, str(tmp), json.dumps([s for s, _ in SEQUENCE]), NAME, str(RERUN)], env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    seen = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(seen) == len(SEQUENCE) + 1, proc.stdout[-2000:]
    return tmp, env, seen


@pytest.mark.e2e
@pytest.mark.parametrize("step", range(1, len(SEQUENCE) + 1))
def test_export_moves_the_champion_only_when_the_rule_says(sequence, step):
    tmp, _, seen = sequence
    (gate, fcd, ratio, protocol), (champion, promoted, words) = SEQUENCE[step - 1]
    got = seen[step - 1]
    before = seen[step - 2]["alias"] if step > 1 else None
    assert got["version"] == str(step), got["run_tags"]
    assert got["alias"] == champion
    verb = "now champion" if promoted else "champion unchanged"
    assert f"v{step} ({verb}: " in got["stdout"], got["stdout"]

    tags = got["run_tags"]
    reason = tags["promotion.reason"]
    assert tags["promotion.promoted"] == str(promoted)
    assert all(w in reason for w in words), reason
    assert tags.get("promotion.champion_before") == before  # absent when there was none
    assert reason in got["stdout"]

    pj = got["promotion_json"]
    assert pj["promote"] is promoted and pj["reason"] == reason and pj["champion_before"] == before
    assert pj["challenger"]["version"] == str(step) and pj["challenger"]["fcd"] == fcd
    assert pj["challenger"]["eval_protocol"] == protocol and pj["challenger"]["quality_gate_passed"] is gate
    assert (pj["champion"] or {}).get("version") == before
    if before:
        assert float(pj["champion"]["fcd"]) == SEQUENCE[int(before) - 1][0][1]
    assert got["card"]["promotion"] == {"promote": promoted, "champion_before": before, "reason": reason}

    vt = got["version_tags"]
    assert (vt["quality_gate_passed"], vt["eval_protocol"], vt["promotion"]) == (str(gate), protocol, reason)
    assert (float(vt["fcd"]), float(vt["classifier_score_ratio"])) == (fcd, ratio)
    name, _, bento_version = vt["bentoml_tag"].partition(":")
    assert name == "mnist_gan_generator" and bento_version and vt["bentoml_tag"] == tags["bentoml_tag"]
    stored = tmp / "bentoml/models/mnist_gan_generator" / bento_version
    assert (stored / "saved_model/saved_model.pb").is_file()
    assert json.loads((stored / "model_card.json").read_text())["registered_model"]["version"] == str(step)


# 3. Serving the champion ----------------------------------------------------------------------

@pytest.mark.e2e
@pytest.mark.e2e
def test_an_export_run_again_registers_nothing_and_its_decision_stands(sequence):
    """The export of a run that already registered a version from the same files (a try
    that failed after registering, then a rerun) takes that version, and the decision the
    first try recorded: the champion is not ranked against itself."""
    _, _, seen = sequence
    first, again = seen[RERUN - 1], seen[-1]
    assert f"v{RERUN} was registered from this run and these files by an earlier try" in again["stdout"]
    assert again["version"] == first["version"] == str(RERUN) and again["versions"] == len(SEQUENCE)
    assert again["alias"] == seen[-2]["alias"] == str(RERUN)
    decision = {k: first["promotion_json"][k] for k in ("promote", "champion_before", "reason")}
    assert {k: again["promotion_json"][k] for k in decision} == decision == again["card"]["promotion"]
    assert again["version_tags"]["promotion"] == first["version_tags"]["promotion"] == decision["reason"]
    assert "superseded_by" not in again["version_tags"]


def test_selection_names_the_champion(sequence, tmp_path):
    _, env, seen = sequence
    tag = seen[-1]["version_tags"]["bentoml_tag"]  # v4's, as its export run again left it
    proc = _py(["-m", "serving.selection"], env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and tag in lines[0] and "v4" in lines[0], proc.stdout
    assert seen[3]["run_tags"]["promotion.reason"] in lines[0]

    proc = _py(["-m", "serving.selection", "--tag"], env, cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == tag, proc.stdout + proc.stderr[-2000:]


@pytest.mark.e2e
def test_service_serves_the_champion_by_default(sequence, tmp_path):
    _, env, seen = sequence
    assert "MNIST_GAN_MODEL" not in env
    from mlflow.tracking import MlflowClient

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    with Served(tmp_path, env) as server:
        info = requests.get(f"{server.url}/info", timeout=30).json()
        r = requests.post(f"{server.url}/render", json={"z": [0.3] * 8}, timeout=30)
        # The champion moves while it serves: it keeps its version, and says a newer one exists.
        client.set_registered_model_alias(NAME, "champion", "2")
        try:
            moved = requests.get(f"{server.url}/info", timeout=30).json()
            again = requests.post(f"{server.url}/render", json={"z": [0.3] * 8}, timeout=30)
        finally:
            client.set_registered_model_alias(NAME, "champion", "4")
    assert info["champion_now"] == {"version": "4", "newer": False}
    assert moved["champion_now"] == {"version": "2", "newer": True}
    assert moved["registered_model"] == info["registered_model"] and moved["tag"] == info["tag"]
    assert again.status_code == 200 and again.content == r.content
    sel = info["selected"]
    assert sel["by"] == "champion" and sel["version"] == "4" and sel["registered_model"] == NAME, sel
    assert seen[3]["run_tags"]["promotion.reason"] in sel["reason"]
    assert info["tag"] == seen[-1]["version_tags"]["bentoml_tag"] and info["z_dim"] == 8
    assert info["registered_model"] == {"name": NAME, "version": "4"} and info["promotion"]["promote"] is True
    assert r.status_code == 200 and r.headers["content-type"] == "image/png" and r.content[:4] == b"\x89PNG"


@pytest.mark.slow
@pytest.mark.parametrize("store", ["created", "zero-byte"])
def test_no_champion_in_an_empty_store_says_how_to_serve_another(tmp_path, store):
    from mlflow.tracking import MlflowClient

    env = _env(tmp_path, "empty.db")
    if store == "created":  # the store exists, with nothing registered
        MlflowClient(env["MLFLOW_TRACKING_URI"]).search_experiments()
    else:
        (tmp_path / "empty.db").touch()
    assert (tmp_path / "empty.db").is_file()
    proc = _py(["-m", "serving.selection"], env, cwd=tmp_path)
    assert proc.returncode == 1 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no champion" in lines[0] and "MODEL=latest" in lines[0], proc.stderr
    if store == "zero-byte":
        assert (tmp_path / "empty.db").stat().st_size == 0  # asking did not create a store
