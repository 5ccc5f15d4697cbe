"""L1 metrics from seed 002 (mean |a - b| over pixels in [0, 1]), exact and fast.

Images are 8-bit (n, 28, 28) arrays, as PNG stores them; distances are
computed in integers and reported divided by 255 * 784, so they equal
`np.mean(np.abs(a / 255 - b / 255))`. The numba kernels run at memory speed
and hold no (n, m) distance matrix.
"""
from __future__ import annotations

import numba
import numpy as np

_MAX = np.iinfo(np.int64).max


@numba.njit(parallel=True, cache=True)
def _nearest_sum_abs(q: np.ndarray, ref: np.ndarray):
    nq, d = q.shape
    best = np.empty(nq, np.int64)
    arg = np.empty(nq, np.int64)
    for i in numba.prange(nq):
        b, a = _MAX, -1
        qi = q[i].astype(np.int32)
        for j in range(ref.shape[0]):
            s = 0
            for k in range(d):
                s += abs(qi[k] - np.int32(ref[j, k]))
            if s < b:
                b, a = s, j
        best[i], arg[i] = b, a
    return best, arg


@numba.njit(parallel=True, cache=True)
def _pairwise_row_sums(x: np.ndarray):
    n, d = x.shape
    rows = np.zeros(n, np.int64)
    for i in numba.prange(n):
        xi = x[i].astype(np.int32)
        t = 0
        for j in range(i + 1, n):
            s = 0
            for k in range(d):
                s += abs(xi[k] - np.int32(x[j, k]))
            t += s
        rows[i] = t
    return rows


def _flat(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype != np.uint8:
        raise TypeError(f"expected uint8 pixels, got {x.dtype}")
    return np.ascontiguousarray(x.reshape(len(x), -1))


def nearest_l1(queries: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each query image: the L1 to its nearest reference image, and that image's index."""
    q, r = _flat(queries), _flat(reference)
    if len(r) == 0:
        raise ValueError("empty reference set")
    best, arg = _nearest_sum_abs(q, r)
    return best / (255.0 * q.shape[1]), arg


def mean_pairwise_l1(images: np.ndarray) -> float:
    """Mean L1 over all unordered pairs of distinct images."""
    x = _flat(images)
    n = len(x)
    if n < 2:
        raise ValueError("need at least two images")
    total = int(_pairwise_row_sums(x).sum())
    return total / (n * (n - 1) / 2) / (255.0 * x.shape[1])


def l1_report(generated: np.ndarray, real_test: np.ndarray, train: np.ndarray) -> dict[str, float]:
    """Memorization and diversity, each against the same computation on real held-out images."""
    gen_nn, _ = nearest_l1(generated, train)
    real_nn, _ = nearest_l1(real_test, train)
    m = {
        "l1_nearest_train_gen": float(gen_nn.mean()),
        "l1_nearest_train_real": float(real_nn.mean()),
        "l1_pairwise_gen": mean_pairwise_l1(generated),
        "l1_pairwise_real": mean_pairwise_l1(real_test),
    }
    m["memorization_ratio"] = m["l1_nearest_train_gen"] / max(m["l1_nearest_train_real"], 1e-12)
    m["diversity_ratio"] = m["l1_pairwise_gen"] / max(m["l1_pairwise_real"], 1e-12)
    return m
