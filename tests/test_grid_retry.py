"""`ops/grid.sh`'s handling of DVC's queue race (treeverse/dvc#10673): with more than
one worker, DVC sometimes fails an experiment before any stage runs. The script queues
such an experiment again; a stage's own failure is reported with its log, never retried.

DVC cannot be made to lose that race on demand, so these tests run the script against
a stand-in `dvc` that answers as DVC's queue does (status table, `queue logs` message);
test_grid.py runs it against the real queue. The message the script keys on is checked
against the installed DVC's source."""
from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

from e2e_util import ROOT

# A stand-in `dvc`: each queued experiment's outcomes come from PLAN (name -> list of
# "setup" | "stage" | "ok", one per attempt); every call is appended to CALLS.
FAKE_DVC = r'''#!PYTHON
import json, os, sys
state_path = os.environ["FAKE_STATE"]
state = json.load(open(state_path)) if os.path.exists(state_path) else {"queue": [], "attempts": {}}
plan = json.loads(os.environ["PLAN"])
args = sys.argv[1:]
with open(os.environ["CALLS"], "a") as f:
    f.write(" ".join(args) + "\n")

def save():
    json.dump(state, open(state_path, "w"))

def outcome(entry):
    return plan[entry["name"]][entry["attempt"]]

if args[:2] == ["exp", "run"]:
    name = args[args.index("-n") + 1]
    attempt = state["attempts"].get(name, 0)
    state["attempts"][name] = attempt + 1
    state["queue"].append({"name": name, "attempt": attempt, "status": "Queued"})
    save()
elif args[:2] == ["queue", "start"]:
    for entry in state["queue"]:
        if entry["status"] == "Queued":
            entry["status"] = "Success" if outcome(entry) == "ok" else "Failed"
    save()
elif args[:2] == ["queue", "status"]:
    print("Task     Name           Created    Status")
    for i, entry in enumerate(state["queue"]):
        print(f"{i:07x}  {entry['name']}  08:32 AM   {entry['status']}")
elif args[:2] == ["queue", "logs"]:
    entry = [e for e in state["queue"] if e["name"] == args[2]][-1]
    if outcome(entry) == "setup":
        print(f"ERROR: No output logs found for experiment '{args[2]}'\nExperiment likely failed during setup.")
        sys.exit(255)
    print("Running stage 'train':\nStageError: train.steps: the run diverged")
elif args[:2] == ["queue", "remove"]:
    state["queue"] = [e for e in state["queue"] if e["name"] not in args[2:]]
    save()
elif args[:2] == ["exp", "show"]:
    print("(the grid)")
else:
    sys.exit(f"fake dvc: unexpected {args}")
'''


def run_grid(tmp_path: Path, plan: dict[str, list[str]]) -> tuple[subprocess.CompletedProcess, list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "dvc").write_text(FAKE_DVC.replace("PYTHON", sys.executable, 1))
    (bin_dir / "dvc").chmod(0o755)
    (bin_dir / "sleep").write_text("#!/bin/sh\n")  # the progress loop's pauses, skipped
    (bin_dir / "sleep").chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", PLAN=json.dumps(plan),
               FAKE_STATE=str(tmp_path / "state.json"), CALLS=str(tmp_path / "calls"),
               ARCHS="mlp", LOSSES=" ".join(name.split("-")[1] for name in plan), SEEDS="1", JOBS="2",
               GRID_SET="-S train.steps=6")
    proc = subprocess.run(["bash", str(ROOT / "ops/grid.sh")], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)
    return proc, (tmp_path / "calls").read_text().splitlines()


def test_an_experiment_that_failed_during_setup_is_queued_again(tmp_path):
    proc, calls = run_grid(tmp_path, {"mlp-bce-s1": ["ok"], "mlp-hinge-s1": ["setup", "ok"]})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "mlp-hinge-s1: failed before any stage ran" in proc.stdout
    assert "grid: 2 experiments: 0 running, 0 queued, 2 done, 0 failed" in proc.stdout
    queued = [c for c in calls if c.startswith("exp run --queue")]
    assert queued == ["exp run --queue -n mlp-bce-s1 -S train.arch=mlp -S train.loss=bce -S train.seed=1 "
                      "-S train.steps=6",
                      "exp run --queue -n mlp-hinge-s1 -S train.arch=mlp -S train.loss=hinge -S train.seed=1 "
                      "-S train.steps=6",
                      "exp run --queue -n mlp-hinge-s1 -S train.arch=mlp -S train.loss=hinge -S train.seed=1 "
                      "-S train.steps=6"]  # the same overrides again
    assert "queue remove mlp-hinge-s1" in calls  # the failed entry gone, so one row per name


def test_a_stage_failure_is_not_retried_and_its_log_is_shown(tmp_path):
    proc, calls = run_grid(tmp_path, {"mlp-bce-s1": ["ok"], "mlp-hinge-s1": ["stage"]})
    assert proc.returncode == 1
    assert sum(c.startswith("exp run --queue -n mlp-hinge-s1") for c in calls) == 1
    assert "grid: mlp-hinge-s1 failed" in proc.stderr and "the run diverged" in proc.stderr
    assert "mlp-bce-s1 failed" not in proc.stderr
    assert "grid: 1 failed" in proc.stderr


def test_setup_failures_are_retried_a_bounded_number_of_times(tmp_path):
    proc, calls = run_grid(tmp_path, {"mlp-bce-s1": ["setup"] * 3})
    assert proc.returncode == 1
    assert sum(c.startswith("exp run --queue") for c in calls) == 3  # the first try and SETUP_RETRIES=2
    assert "failed during setup" in proc.stderr


def test_dvc_still_says_failed_during_setup():
    """The phrase the script keys on, in the installed DVC's `dvc queue logs`."""
    from dvc.repo.experiments.queue.celery import LocalCeleryQueue

    assert "failed during setup" in inspect.getsource(LocalCeleryQueue.logs)
