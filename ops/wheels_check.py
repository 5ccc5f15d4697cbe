"""Proves that every pinned dependency, with every extra, resolves to a wheel
for each Python that `requires-python` admits, without running that Python.

    python ops/wheels_check.py 3.12 3.13

1. The whole set is resolved for this Python (`pip install --dry-run --report`),
   which names every distribution it would install.
2. A distribution published only as an sdist is built here into a wheel; it
   must come out pure Python (`py3-none-any`), which installs on any Python 3.
3. For each other version asked for, `pip install --dry-run --only-binary=:all:
   --python-version V` resolves the set from wheels alone, with those
   pure-Python wheels offered through `--find-links`. For this Python's own
   version, steps 1 and 2 already prove it.

pip reads the user's configuration (indexes, find-links) as for any install.
Resolution fetches metadata, not the wheels. Exit status 1 names what fails.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def requirements(pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    """The project's dependencies and those of every extra, except the extras
    that name the project itself (they repeat another extra)."""
    project = tomllib.loads(pyproject.read_text())["project"]
    name = project["name"]
    reqs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        reqs += [r for r in extra if not r.startswith(f"{name}[")]
    return reqs


def _pip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
                          capture_output=True, text=True)


def _resolve(reqs_file: Path, report: Path, *extra: str) -> list[dict]:
    with tempfile.TemporaryDirectory() as target:
        proc = _pip("install", "--quiet", "--dry-run", "--ignore-installed", "--target", target,
                    "--report", str(report), *extra, "-r", str(reqs_file))
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("ERROR") or "requires" in ln]
        raise SystemExit("\n".join(lines[-12:]) or proc.stderr[-2000:])
    return json.loads(report.read_text())["install"]


def sdist_only(installs: list[dict]) -> list[tuple[str, str]]:
    """(name, version) of each distribution the resolution takes from an sdist."""
    return [(i["metadata"]["name"], i["metadata"]["version"]) for i in installs
            if not i["download_info"]["url"].split("#")[0].endswith(".whl")]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("versions", nargs="+", help="Python versions, e.g. 3.12 3.13")
    args = ap.parse_args(argv)
    reqs = requirements()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "requirements.txt").write_text("\n".join(reqs) + "\n")
        here = _resolve(tmp / "requirements.txt", tmp / "here.json")
        print(f"{len(reqs)} pinned requirements resolve to {len(here)} distributions for this Python "
              f"({sys.version_info.major}.{sys.version_info.minor})")
        wheels = tmp / "wheels"
        for name, version in sdist_only(here):
            proc = _pip("wheel", "--quiet", "--no-deps", "--no-binary", name, "-w", str(wheels), f"{name}=={version}")
            built = sorted(wheels.glob(f"{name.replace('-', '_')}-{version}-*.whl"), key=lambda p: p.name.lower())
            if proc.returncode != 0 or not built:
                print(f"FAIL: {name}=={version} is published as an sdist only and did not build: "
                      f"{proc.stderr[-500:]}")
                return 1
            tag = built[0].name[len(f"{name.replace('-', '_')}-{version}-"):-len(".whl")]
            if tag != "py3-none-any":
                print(f"FAIL: {name}=={version} is an sdist only and builds a {tag} wheel, not a pure-Python one")
                return 1
            print(f"  {name}=={version}: sdist only on the index; builds a pure-Python wheel ({tag})")
        links = ["--find-links", str(wheels)] if wheels.exists() else []

        def check(v: str) -> tuple[bool, str]:
            if v == f"{sys.version_info.major}.{sys.version_info.minor}":
                # This Python's resolution is the one above: its sdists build pure-Python wheels.
                return True, f"Python {v}: all {len(here)} distributions resolve to wheels (this Python)"
            try:
                got = _resolve(tmp / "requirements.txt", tmp / f"py{v}.json", "--only-binary=:all:",
                               "--python-version", v, *links)
            except SystemExit as exc:
                return False, f"FAIL: Python {v}: no wheels-only resolution:\n{exc}"
            return True, f"Python {v}: all {len(got)} distributions resolve to wheels"

        # One pip per version at once: resolution waits on the index, not the CPU.
        with concurrent.futures.ThreadPoolExecutor(len(args.versions)) as pool:
            results = list(pool.map(check, args.versions))
        for _, line in results:
            print(line)
        return 0 if all(ok for ok, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
