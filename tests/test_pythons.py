"""Supported Pythons: every version `requires-python` admits gets the whole
pinned set (every extra) from wheels, the versions an install would pick,
by uv's resolver against the index (ops/wheels_check.py)."""
from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import zipfile
import tomllib
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "ops"))
import wheels_check  # noqa: E402


def admitted() -> list[str]:
    spec = SpecifierSet(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"])
    return [f"3.{m}" for m in range(8, 20) if f"3.{m}" in spec]


def test_requires_python_admits_current_ubuntu_and_newest_tensorflow():
    assert {"3.11", "3.12", "3.13"} <= set(admitted()), admitted()


def test_requirements_cover_every_extra_but_self_references():
    reqs = wheels_check.requirements()
    assert "tensorflow==2.21.0" in reqs and "dvc-s3==3.3.0" in reqs and "moto[server]==5.2.5" in reqs
    assert not any(r.startswith("mnist-gan[") for r in reqs)


@pytest.mark.network
@pytest.mark.slow
def test_every_admitted_python_resolves_to_wheels():
    versions = admitted()
    proc = subprocess.run([sys.executable, str(ROOT / "ops/wheels_check.py"), *versions],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    for v in versions:
        assert f"Python {v}: all " in proc.stdout, proc.stdout


def _wheel(folder: Path, name: str, version: str, tag: str) -> None:
    """A wheel file of an empty package, tagged `tag`."""
    with zipfile.ZipFile(folder / f"{name}-{version}-{tag}.whl", "w") as z:
        z.writestr(f"{name}/__init__.py", "")
        info = f"{name}-{version}.dist-info"
        z.writestr(f"{info}/METADATA", f"Metadata-Version: 2.2\nName: {name}\nVersion: {version}\n")
        z.writestr(f"{info}/WHEEL", f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: {tag}\n")
        z.writestr(f"{info}/RECORD", "")


# An in-tree build backend, so that pip builds the sdist with no index at all.
BACKEND = """import os, zipfile
def get_requires_for_build_wheel(config_settings=None):
    return []
def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    name, version, tag = open("tag.txt").read().split()
    fn = f"{name}-{version}-{tag}.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, fn), "w") as z:
        z.writestr(f"{name}-{version}.dist-info/METADATA", f"Metadata-Version: 2.2\\nName: {name}\\nVersion: {version}\\n")
        z.writestr(f"{name}-{version}.dist-info/WHEEL", f"Wheel-Version: 1.0\\nRoot-Is-Purelib: true\\nTag: {tag}\\n")
        z.writestr(f"{name}-{version}.dist-info/RECORD", "")
    return fn
"""


def _sdist(folder: Path, name: str, version: str, builds: str) -> None:
    """An sdist with static metadata whose build makes a wheel tagged `builds`."""
    files = {"PKG-INFO": f"Metadata-Version: 2.2\nName: {name}\nVersion: {version}\n",
             "pyproject.toml": f'[project]\nname = "{name}"\nversion = "{version}"\n[build-system]\n'
                               'requires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n',
             "backend.py": BACKEND, "tag.txt": f"{name} {version} {builds}\n"}
    with tarfile.open(folder / f"{name}-{version}.tar.gz", "w:gz") as tar:
        for path, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{name}-{version}/{path}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.fixture
def index(tmp_path, monkeypatch):
    """A local index (a find-links folder) that uv and pip read instead of the real one."""
    folder = tmp_path / "index"
    folder.mkdir()
    for tool in ("UV", "PIP"):
        monkeypatch.setenv(f"{tool}_NO_INDEX", "1")
        monkeypatch.setenv(f"{tool}_FIND_LINKS", str(folder))
    return folder


@pytest.mark.parametrize("builds, passes", [("py3-none-any", True), ("cp313-cp313-linux_x86_64", False)])
def test_a_python_without_wheels_passes_only_when_the_sdist_builds_pure_python(index, tmp_path, builds, passes):
    """cp312 wheels and an sdist: 3.12 installs the wheel; 3.13 builds the sdist,
    which is fine only when it builds a wheel for any Python."""
    _wheel(index, "onlycp", "1.0", "cp312-cp312-manylinux_2_17_x86_64")
    _sdist(index, "onlycp", "1.0", builds)
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("onlycp==1.0\n")
    ok, text = wheels_check.check("3.12", reqs, tmp_path / "py3.12")
    assert ok and text == "Python 3.12: all 1 distributions resolve to wheels", text
    ok, text = wheels_check.check("3.13", reqs, tmp_path / "py3.13")
    assert ok is passes, text
    if passes:
        assert "onlycp==1.0: no wheel on the index; its sdist builds a pure-Python wheel" in text, text
    else:
        assert text.startswith("FAIL: Python 3.13: onlycp==1.0") and "cp313-cp313-linux_x86_64" in text, text


def test_a_python_with_no_wheel_and_no_sdist_fails_and_names_the_pin(index, tmp_path):
    _wheel(index, "onlycp", "1.0", "cp312-cp312-manylinux_2_17_x86_64")
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("onlycp==1.0\n")
    ok, text = wheels_check.check("3.13", reqs, tmp_path / "py3.13")
    assert not ok and text.startswith("FAIL: Python 3.13: the set does not resolve") and "onlycp" in text, text
