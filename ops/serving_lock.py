"""The Bento's exact Python packages: serving/requirements.lock.txt.

    python ops/serving_lock.py           # write it (make lock)
    python ops/serving_lock.py --check   # exit 1, naming each problem, when it is stale

The lock is serving/requirements.txt plus this environment's BentoML, resolved
by uv for the Bento image (serving/bentofile.yaml's docker Python on Debian,
x86_64). `bentoml build` takes it as it is (lock_packages: false), so a Bento
builds offline, from pins kept in git, the same on every machine.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from wheels_check import uv

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = ROOT / "serving/requirements.txt"
LOCK = ROOT / "serving/requirements.lock.txt"
BENTOFILE = ROOT / "serving/bentofile.yaml"
# The Bento image's base: Debian bookworm (glibc 2.36) on x86_64, BentoML's own lock target.
PLATFORM = "x86_64-manylinux_2_36"


def image_python(bentofile: Path = BENTOFILE) -> str:
    return str(yaml.safe_load(bentofile.read_text())["docker"]["python_version"])


def bentoml_pin() -> str:
    """What `bentoml build` adds to a Bento's requirements: this BentoML."""
    return f"bentoml=={importlib.metadata.version('bentoml')}"


def requirements(text: str) -> list[Requirement]:
    """The requirement lines of a requirements file (comments and options left out)."""
    lines = (line.split("#")[0].strip() for line in text.splitlines())
    return [Requirement(line) for line in lines if line and not line.startswith("-")]


def locked(text: str) -> dict[str, str]:
    """canonical name -> version of each `name==version` line of a lock."""
    return {canonicalize_name(r.name): str(r.specifier).removeprefix("==") for r in requirements(text)}


def problems(lock_text: str, requirements_text: str, bentoml: str) -> list[str]:
    """What makes a lock stale: a requirement it does not pin, or pins outside
    the requirement's range, or a BentoML other than this environment's."""
    pins = locked(lock_text)
    found = []
    for req in requirements(f"{requirements_text}\n{bentoml}"):
        version = pins.get(canonicalize_name(req.name))
        if version is None:
            found.append(f"{req.name} is not pinned")
        elif not req.specifier.contains(version, prereleases=True):
            found.append(f"{req.name}=={version} is outside {req.specifier}")
    return found


def lock() -> str:
    """Resolves the lock with uv and returns its text."""
    with tempfile.TemporaryDirectory() as tmp:
        extra = Path(tmp) / "bentoml.txt"
        extra.write_text(bentoml_pin() + "\n")
        out = Path(tmp) / "lock.txt"
        proc = subprocess.run([uv(), "pip", "compile", "--quiet", "--python", sys.executable,
                               "--python-version", image_python(), "--python-platform", PLATFORM,
                               "--custom-compile-command", "make lock", "--no-annotate",
                               "-o", str(out), str(REQUIREMENTS), str(extra)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"uv pip compile failed:\n{proc.stderr[-2000:]}")
        return out.read_text()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only check that the lock is current")
    args = ap.parse_args(argv)
    if args.check:
        found = problems(LOCK.read_text() if LOCK.exists() else "", REQUIREMENTS.read_text(), bentoml_pin())
        for problem in found:
            print(f"{LOCK.relative_to(ROOT)}: {problem}; `make lock` writes it again", file=sys.stderr)
        return 1 if found else 0
    text = lock()
    tmp = LOCK.with_name(LOCK.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, LOCK)
    print(f"{LOCK.relative_to(ROOT)}: {len(locked(text))} packages for Python {image_python()} on {PLATFORM}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
