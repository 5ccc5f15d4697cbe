"""Proves that every pinned dependency, with every extra, resolves to a wheel
for each Python that `requires-python` admits, without running that Python.

    python ops/wheels_check.py 3.12 3.13

For each version V asked for:
1. The whole set is resolved for V as an install would resolve it, sources
   allowed (`uv pip compile --python-version V --format pylock.toml`), which
   names every distribution and the files it is published as.
2. A distribution with no wheel for V on the index (an sdist only) is built
   here into a wheel with pip; it must come out pure Python (`py3-none-any`),
   which installs on any Python 3.
3. The set is resolved again from wheels alone (`--only-binary :all:`), with
   those pure-Python wheels offered through `--find-links`. Without them a
   wheels-only resolution would fall back to other versions (for DVC's antlr4,
   a pre-release of hydra-core), which is not what an install gets.

uv resolves from the wheels' metadata alone, never downloading the wheels
(pip's dry run fetches every one, gigabytes for the CUDA extra). It reads its
own index configuration (UV_INDEX_URL, UV_EXTRA_INDEX_URL, UV_FIND_LINKS,
uv.toml) and retries failed requests; pip, which builds the sdists, reads
pip's. Exit status 1 names what fails.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import os
import shutil
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


def uv() -> str:
    """The environment's own uv (a pinned dev dependency), else one on PATH."""
    here = Path(sys.executable).with_name("uv")
    found = str(here) if here.exists() else shutil.which("uv")
    if not found:
        raise SystemExit("uv is not installed: `pip install -e .[dev]` installs the pinned one")
    return found


def resolve(reqs_file: Path, version: str, out: Path, *extra: str) -> dict[str, dict]:
    """name -> pylock package entry of the set resolved for Python `version`."""
    # --python: this interpreter answers for the platform, so uv queries no other one.
    proc = subprocess.run([uv(), "pip", "compile", "--quiet", "--no-header", "--python", sys.executable,
                           "--python-version", version,
                           "--format", "pylock.toml", "-o", str(out), *extra, str(reqs_file)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr.strip()[-2000:] or f"uv pip compile exited {proc.returncode}")
    return {p["name"]: p for p in tomllib.loads(out.read_text())["packages"]}


def without_wheels(packages: dict[str, dict]) -> list[tuple[str, str]]:
    """(name, version) of each distribution the resolution found no wheel of
    for its Python (the pylock lists only the wheels that install there)."""
    return sorted((name, p["version"]) for name, p in packages.items() if not p.get("wheels"))


def build_pure_wheel(name: str, version: str, wheels: Path) -> str | None:
    """Builds name==version from its sdist into `wheels`; None when it builds a
    pure-Python wheel, else what went wrong."""
    stem = f"{name.replace('-', '_')}-{version}-"
    proc = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "wheel", "--quiet",
                           "--no-deps", "--no-binary", name, "-w", str(wheels), f"{name}=={version}"],
                          capture_output=True, text=True)
    built = sorted(p for p in wheels.glob("*.whl") if p.name.lower().startswith(stem.lower()))
    if proc.returncode != 0 or not built:
        return f"has no wheel on the index and its sdist did not build: {proc.stderr[-500:]}"
    tag = built[0].name[len(stem):-len(".whl")]
    if tag != "py3-none-any":
        return f"has no wheel on the index and its sdist builds a {tag} wheel, not a pure-Python one"
    return None


def check(version: str, reqs_file: Path, work: Path) -> tuple[bool, str]:
    """Steps 1-3 of the module's docstring for one Python version."""
    work.mkdir()
    try:
        wanted = resolve(reqs_file, version, work / "pylock.sources.toml")
    except SystemExit as exc:
        return False, f"FAIL: Python {version}: the set does not resolve:\n{exc}"
    wheels = work / "wheels"
    wheels.mkdir()
    lines = []
    for name, v in without_wheels(wanted):
        problem = build_pure_wheel(name, v, wheels)
        if problem:
            return False, f"FAIL: Python {version}: {name}=={v} {problem}"
        lines.append(f"  {name}=={v}: no wheel on the index; its sdist builds a pure-Python wheel (py3-none-any)")
    # A --find-links on the command line replaces UV_FIND_LINKS: the user's are passed on too.
    links = [str(wheels), *filter(None, os.environ.get("UV_FIND_LINKS", "").split(","))]
    try:
        got = resolve(reqs_file, version, work / "pylock.wheels.toml", "--only-binary", ":all:",
                      *(arg for link in links for arg in ("--find-links", link)))
    except SystemExit as exc:
        return False, f"FAIL: Python {version}: no wheels-only resolution:\n{exc}"
    return True, "\n".join([*lines, f"Python {version}: all {len(got)} distributions resolve to wheels"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("versions", nargs="+", help="Python versions, e.g. 3.12 3.13")
    args = ap.parse_args(argv)
    reqs = requirements()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "requirements.txt").write_text("\n".join(reqs) + "\n")
        print(f"{len(reqs)} pinned requirements, resolved for Python {', '.join(args.versions)}")
        # One resolution per version at once: they wait on the index, not the CPU.
        with concurrent.futures.ThreadPoolExecutor(len(args.versions)) as pool:
            results = list(pool.map(lambda v: check(v, tmp / "requirements.txt", tmp / f"py{v}"), args.versions))
        for _, text in results:
            print(text)
        return 0 if all(ok for ok, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
