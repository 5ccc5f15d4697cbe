"""The Debian packages some tests need, and how each is found. Each package's
name is also its pytest marker:

    pytestmark = pytest.mark.postgresql          # the whole file
    @pytest.mark.chromium                        # one test

conftest.py registers the markers, names what is missing before the run,
skips the tests that need it, and fails them instead where CI=true (a skip
must not pass as green in CI). `make system-deps` installs the packages as root.
MNIST_GAN_PRETEND_MISSING=chromium,graphviz treats packages as missing (to see
the skips, and in the test of this module).
"""
from __future__ import annotations

import ast
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from ops import mlflow_ui, stack  # noqa: E402

PRETEND = "MNIST_GAN_PRETEND_MISSING"


def _chromium() -> str | None:
    return None if mlflow_ui.chromium() else "no chromium, chromium-browser or google-chrome on PATH"


def _graphviz() -> str | None:
    return None if shutil.which("dot") else "no `dot` on PATH"


def _postgresql() -> str | None:
    # The checks `make stack` makes before it starts the server (ops/stack.py).
    try:
        for name in ("initdb", "pg_ctl", "postgres"):
            stack._pg_bin(name)
        stack._as_pg_user()
    except stack.StackError as exc:
        return str(exc)
    return None


@dataclass(frozen=True)
class Package:
    use: str                            # what the tests do with it
    problem: Callable[[], str | None]   # why it cannot be used here, or None


# Debian package (and marker) -> the package. Adding one is one entry here and
# the marker on its tests; the Makefile's DEBIAN_PACKAGES installs it.
PACKAGES = {
    "postgresql": Package("make stack's database", _postgresql),
    "chromium": Package("the headless browser", _chromium),
    "graphviz": Package("`dot`, the architecture diagrams", _graphviz),
}


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def missing() -> dict[str, str]:
    """Each package that cannot be used here -> why."""
    pretend = set(os.environ.get(PRETEND, "").replace(",", " ").split())
    found = {name: f"{PRETEND} names it" if name in pretend else pkg.problem() for name, pkg in PACKAGES.items()}
    return {name: why for name, why in found.items() if why}


def install_hint(names) -> str:
    return f"`make system-deps` as root, or `apt-get install {' '.join(names)}`"


def reason(names: list[str], gone: dict[str, str]) -> str:
    """The skip or failure reason of a test that needs `names`."""
    return ("needs Debian's " + " and ".join(f"{n} ({PACKAGES[n].use}; {gone[n]})" for n in names)
            + f"; install with {install_hint(names)}")


def marked_files(paths: list[Path]) -> dict[str, list[Path]]:
    """Package -> the test files among `paths` that use its marker (`pytest.mark.<name>`
    anywhere in the file's code). Read from the source, so that the header can name
    them before collection, which under xdist happens in the workers only."""
    found: dict[str, list[Path]] = {}
    for path in paths:
        try:
            tree = ast.parse(path.read_text(), str(path))
        except (OSError, SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr in PACKAGES and isinstance(node.value, ast.Attribute)
                    and node.value.attr == "mark"):
                if path not in found.setdefault(node.attr, []):
                    found[node.attr].append(path)
    return found


def selected_files(args: list[str], cwd: Path) -> list[Path]:
    """The test files that pytest's arguments (files, folders, node ids) name."""
    files: list[Path] = []
    for arg in args:
        path = cwd / arg.split("::")[0]
        if path.is_dir():
            files += sorted(path.rglob("test_*.py"))
        elif path.suffix == ".py":
            files.append(path)
    return files


def header(args: list[str], cwd: Path, rootdir: Path) -> list[str]:
    """The lines the run starts with: what is missing, which files need it, what installs it."""
    gone = missing()
    if not gone:
        return [f"system packages: {', '.join(PACKAGES)} found"]
    marked = marked_files(selected_files(args, cwd))
    needed = {name: marked[name] for name in gone if name in marked}
    if not needed:
        return [f"system packages: {', '.join(gone)} missing; no test in this run needs them"]
    outcome = "fail (CI is set)" if in_ci() else "are skipped"
    lines = [f"system packages missing: {', '.join(needed)}; the tests that need them {outcome}"]
    for name, files in needed.items():
        shown = ", ".join(str(f.relative_to(rootdir)) if f.is_relative_to(rootdir) else str(f) for f in files)
        lines.append(f"  {name} ({PACKAGES[name].use}; {gone[name]}): {shown}")
    lines.append(f"  install: {install_hint(needed)}")
    return lines
