import numpy as np
from scipy.spatial.distance import cdist

from pipeline import metrics

rng = np.random.default_rng(1)


def unit(x):
    return x.reshape(len(x), -1).astype(np.float64) / 255.0


def test_nearest_l1_matches_cdist():
    q = rng.integers(0, 256, (37, 28, 28), dtype=np.uint8)
    r = rng.integers(0, 256, (203, 28, 28), dtype=np.uint8)
    r[5] = q[3]  # an exact copy has distance 0
    d, idx = metrics.nearest_l1(q, r)
    ref = cdist(unit(q), unit(r), "cityblock") / 784
    np.testing.assert_allclose(d, ref.min(axis=1), rtol=1e-12)
    np.testing.assert_array_equal(idx, ref.argmin(axis=1))
    assert d[3] == 0 and idx[3] == 5


def test_pairwise_matches_cdist():
    x = rng.integers(0, 256, (51, 28, 28), dtype=np.uint8)
    ref = cdist(unit(x), unit(x), "cityblock") / 784
    np.testing.assert_allclose(metrics.mean_pairwise_l1(x), ref[np.triu_indices(51, 1)].mean(), rtol=1e-12)


def test_report_flags_copies_and_collapse():
    train = rng.integers(0, 256, (100, 28, 28), dtype=np.uint8)
    test = rng.integers(0, 256, (30, 28, 28), dtype=np.uint8)
    copies = train[:30]
    collapsed = np.repeat(test[:1], 30, axis=0)
    m = metrics.l1_report(copies, test, train)
    assert m["l1_nearest_train_gen"] == 0 and m["memorization_ratio"] == 0
    m = metrics.l1_report(collapsed, test, train)
    assert m["l1_pairwise_gen"] == 0 and m["diversity_ratio"] == 0
    assert abs(m["l1_pairwise_real"] - metrics.mean_pairwise_l1(test)) < 1e-12
