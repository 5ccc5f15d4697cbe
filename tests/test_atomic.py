"""Atomic outputs: a failed write leaves the last good file, and a finished
one gets the permissions any new file would (not mkstemp's owner-only)."""
import os

import pytest

from pipeline import atomic


def test_failed_write_keeps_the_last_good_output(tmp_path):
    target = tmp_path / "out.json"
    atomic.write_json(target, {"good": 1})
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert target.read_text() == '{\n  "good": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_outputs_get_the_mode_of_any_new_file(tmp_path):
    atomic.write_text(tmp_path / "f.txt", "x")
    with atomic.atomic_dir(tmp_path / "d") as d:
        (d / "inside").write_text("y")
    (tmp_path / "plain.txt").write_text("z")   # what open() makes under this umask
    (tmp_path / "plain").mkdir()
    assert os.stat(tmp_path / "f.txt").st_mode & 0o777 == os.stat(tmp_path / "plain.txt").st_mode & 0o777
    assert os.stat(tmp_path / "d").st_mode & 0o777 == os.stat(tmp_path / "plain").st_mode & 0o777
