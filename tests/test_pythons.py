"""Supported Pythons: every version `requires-python` admits gets the whole
pinned set (every extra) from wheels, by pip's own resolver against the
configured indexes (ops/wheels_check.py)."""
from __future__ import annotations

import subprocess
import sys
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
