"""The system-package markers (tests/system_deps.py, conftest.py): a missing package
is named before the run, its tests are skipped with the reason, and in CI they fail."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import system_deps

TESTS = Path(__file__).resolve().parent
TINY = '''import pytest

pytestmark = pytest.mark.graphviz


@pytest.mark.chromium
def test_browser():
    pass


def test_plain():
    pass
'''


def run_tiny(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """pytest on a file with one chromium test (and a file-wide graphviz marker), with
    the suite's settings and conftest (as a plugin), without CI."""
    (tmp_path / "test_tiny.py").write_text(TINY)
    env = {k: v for k, v in os.environ.items() if k not in ("CI", system_deps.PRETEND, "PYTEST_ADDOPTS")} | env
    # Only pytest's own plugins and the conftest: a second's start instead of several.
    env.update(PYTHONPATH=str(TESTS), PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    return subprocess.run([sys.executable, "-m", "pytest", "-c", str(system_deps.ROOT / "pyproject.toml"),
                           "--rootdir", str(tmp_path), "-p", "conftest", "-p", "no:cacheprovider", "-W", "error",
                           "-rA", "test_tiny.py", *args],
                          cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)


def test_a_missing_package_is_named_and_its_tests_are_skipped(tmp_path):
    proc = run_tiny(tmp_path, **{system_deps.PRETEND: "chromium"})
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    header = out.split("collected")[0]
    assert "system packages missing: chromium; the tests that need them are skipped" in header
    assert re.search(r"  chromium \(.*\): test_tiny\.py\n", header), header
    assert "`make system-deps` as root, or `apt-get install chromium`" in header
    assert re.search(r"SKIPPED \[1\] test_tiny\.py:\d+: needs Debian's chromium \(the headless browser; "
                     rf"{system_deps.PRETEND} names it\); install with `make system-deps`", out), out
    assert "PASSED test_tiny.py::test_plain" in out and "1 passed, 1 skipped" in out


def test_under_xdist_the_header_comes_once(tmp_path):
    proc = run_tiny(tmp_path, "-p", "xdist.plugin", "-n", "2", **{system_deps.PRETEND: "chromium"})
    assert proc.stdout.count("system packages missing: chromium") == 1, proc.stdout
    assert "1 passed, 1 skipped" in proc.stdout and "needs Debian's chromium" in proc.stdout, proc.stdout


def test_in_ci_a_missing_package_fails_its_tests(tmp_path):
    proc = run_tiny(tmp_path, CI="true", **{system_deps.PRETEND: "chromium graphviz"})
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    assert "system packages missing: chromium, graphviz; the tests that need them fail (CI is set)" in out
    assert "apt-get install chromium graphviz" in out
    assert re.search(r"ERROR test_tiny\.py::test_browser - Failed: needs Debian's chromium .* and graphviz .*; "
                     r"install with `make system-deps` as root, or `apt-get install chromium graphviz`", out), out
    assert "ERROR test_tiny.py::test_plain - Failed: needs Debian's graphviz" in out
    assert "2 errors" in out and "passed" not in out.splitlines()[-1]


def test_a_chromium_test_is_a_browser_test(tmp_path):
    """make test-fast's `-m "not browser"` leaves the chromium tests out."""
    proc = run_tiny(tmp_path, "-m", "not browser", **{system_deps.PRETEND: "graphviz"})
    assert "1 skipped, 1 deselected" in proc.stdout, proc.stdout


def test_detection(monkeypatch):
    monkeypatch.delenv(system_deps.PRETEND, raising=False)
    monkeypatch.setenv("PATH", "")
    gone = system_deps.missing()
    assert gone["graphviz"] == "no `dot` on PATH"
    assert gone["chromium"] == "no chromium, chromium-browser or google-chrome on PATH"
    monkeypatch.setenv(system_deps.PRETEND, "postgresql")
    assert gone.items() <= system_deps.missing().items()
    assert system_deps.missing()["postgresql"] == f"{system_deps.PRETEND} names it"


def test_the_markers_are_read_from_code_not_strings(tmp_path):
    (tmp_path / "test_a.py").write_text(TINY)
    (tmp_path / "test_b.py").write_text('"""@pytest.mark.postgresql in a docstring"""\n')
    files = system_deps.selected_files([str(tmp_path)], Path.cwd())
    assert system_deps.marked_files(files) == {"graphviz": [tmp_path / "test_a.py"],
                                               "chromium": [tmp_path / "test_a.py"]}


def test_the_suite_marks_its_package_needs():
    """Every package has its tests, and the Makefile's system-deps installs each."""
    used = system_deps.marked_files(system_deps.selected_files(["."], TESTS))
    assert set(used) == set(system_deps.PACKAGES)
    assert [f.name for f in used["postgresql"]] == ["test_team.py"]
    make = re.search(r"^DEBIAN_PACKAGES \?= (.*)$", (system_deps.ROOT / "Makefile").read_text(), re.M)
    assert set(make.group(1).split()) == set(system_deps.PACKAGES)
