"""Facts about the project's own files: every stage's `deps` in dvc.yaml list
every project module it imports (directly or not), MLflow is imported in one
pipeline module only, no stage imports another stage, and what the documented
commands write is ignored by git."""
from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PIPELINE = ROOT / "pipeline"
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


PACKAGES = ("pipeline", "serving")


def module_file(module: str) -> Path:
    return ROOT / (module.replace(".", "/") + ".py")


def imported_modules(path: Path) -> set[str]:
    """The project's modules (`pipeline.*`, `serving.*`) a file imports anywhere in it
    (lazy imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] in PACKAGES}
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module in PACKAGES:
                found |= {f"{node.module}.{a.name}" for a in node.names}
            elif node.module.split(".")[0] in PACKAGES:
                found.add(node.module)
    return {m for m in found if module_file(m).is_file()}


def closure(module: str) -> set[str]:
    """The module and everything it imports from the project, transitively, as paths."""
    seen, todo = set(), [module]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        todo += imported_modules(module_file(m))
    # Importing any of them runs its package's __init__ first.
    inits = {f"{m.split('.')[0]}/__init__.py" for m in seen if module_file(m.split(".")[0] + ".__init__").is_file()}
    return {str(module_file(m).relative_to(ROOT)) for m in seen} | inits


def stage_module(stage: dict) -> str:
    return re.search(r"python -m (pipeline\.\w+)", stage["cmd"]).group(1)


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_deps_list_every_module_it_imports(name):
    stage = STAGES[name]
    listed = {d for d in stage["deps"] if d.startswith(tuple(f"{p}/" for p in PACKAGES))}
    needed = closure(stage_module(stage))
    assert needed <= listed, f"{name}: add to deps: {sorted(needed - listed)}"
    # Files listed but never imported must be files the stage's code names (export logs
    # mlflow_model.py and the serving requirements).
    source = "".join((ROOT / f).read_text() for f in needed)
    for extra in listed - needed:
        assert (ROOT / extra).is_file() and Path(extra).name in source, \
            f"{name}: {extra} is listed but neither imported nor named by the stage"


def test_no_stage_imports_another_stage():
    stage_files = {f"pipeline/{stage_module(s).split('.', 1)[1]}.py" for s in STAGES.values()}
    for f in stage_files:
        others = {str(module_file(m).relative_to(ROOT)) for m in imported_modules(ROOT / f)} & stage_files
        assert not others - {f}, f"{f} imports the stage(s) {sorted(others - {f})}"


def test_mlflow_is_imported_in_the_tracking_module_only():
    importers = set()
    for path in sorted(PIPELINE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n == "mlflow" or n.startswith("mlflow.") for n in names):
                importers.add(path.name)
    # mlflow_model.py is the logged model's own code (MLflow "models from code").
    assert importers == {"tracking.py", "mlflow_model.py"}


def test_serving_imports_nothing_from_pipeline():
    for path in (ROOT / "serving").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not any(n.split(".")[0] == "pipeline" for n in names), path


def test_what_the_documented_commands_write_is_ignored_by_git():
    """`curl ... -o digit.png`, `--out scored/` in the README, the docs and the Makefile's
    hints, run where they are typed (the repo's root), leave `git status` clean;
    and nothing tracked is ignored."""
    texts = [ROOT / "README.md", ROOT / "Makefile", *sorted((ROOT / "docs").glob("*.md"))]
    written = {m.group(1) for path in texts
               for m in re.finditer(r"(?:\s-o|--out)\s+([\w.][\w./-]*)", path.read_text())}
    assert "digit.png" in written, written
    paths = [w + "x" if w.endswith("/") else w for w in sorted(written)]
    checked = subprocess.run(["git", "check-ignore", "--no-index", *paths], cwd=ROOT, capture_output=True, text=True)
    assert set(checked.stdout.split()) == set(paths), checked
    tracked = subprocess.run(["git", "ls-files", "-ci", "--exclude-standard"], cwd=ROOT, capture_output=True,
                             text=True, check=True)
    assert tracked.stdout == ""


def test_the_suites_start_order_names_only_test_files_that_exist():
    """A renamed file dropped from conftest's order would start last, where a long one
    leaves a worker alone at the end."""
    import conftest

    assert len(set(conftest.LONGEST_FIRST)) == len(conftest.LONGEST_FIRST)
    missing = [name for name in conftest.LONGEST_FIRST if not (ROOT / "tests" / name).is_file()]
    assert not missing, missing
