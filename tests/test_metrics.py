"""Every metric against an independent reference: scipy `cdist` for L1, scipy's
Mann-Whitney U, direct numpy/scipy formulas for FD and KID, loops for PRDC."""
import numpy as np
import pytest
from scipy import linalg, stats
from scipy.spatial.distance import cdist

from pipeline import metrics

rng = np.random.default_rng(1)


def unit(x):
    return x.reshape(len(x), -1).astype(np.float64) / 255.0


@pytest.mark.parametrize("shape", [(28, 28), (5, 7)])  # 784 pixels, and 35: not whole 16-byte lanes
def test_nearest_l1_matches_cdist(shape):
    q = rng.integers(0, 256, (37, *shape), dtype=np.uint8)
    r = rng.integers(0, 256, (203, *shape), dtype=np.uint8)
    r[5] = q[3]  # an exact copy has distance 0
    d, idx = metrics.nearest_l1(q, r)
    ref = cdist(unit(q), unit(r), "cityblock") / np.prod(shape)
    np.testing.assert_allclose(d, ref.min(axis=1), rtol=1e-12)
    np.testing.assert_array_equal(idx, ref.argmin(axis=1))
    assert d[3] == 0 and idx[3] == 5


def test_nearest_l1_ties_keep_the_first_index_like_argmin():
    r = np.zeros((6, 28, 28), np.uint8)
    r[[1, 4]] = 7
    d, idx = metrics.nearest_l1(np.full((2, 28, 28), 7, np.uint8), r)
    np.testing.assert_array_equal(idx, [1, 1])


def test_nearest_other_excludes_itself():
    x = rng.integers(0, 256, (41, 28, 28), dtype=np.uint8)
    x[7] = x[30]
    d, idx = metrics.nearest_other_l1(x)
    ref = cdist(unit(x), unit(x), "cityblock") / 784
    np.fill_diagonal(ref, np.inf)
    np.testing.assert_allclose(d, ref.min(axis=1), rtol=1e-12)
    np.testing.assert_array_equal(idx, ref.argmin(axis=1))
    assert d[7] == 0 and idx[7] == 30


@pytest.mark.parametrize("n", [2, 9, 51])  # fewer, and not a multiple of, the query block
def test_pairwise_matches_cdist(n):
    x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    ref = cdist(unit(x), unit(x), "cityblock") / 784
    np.testing.assert_allclose(metrics.mean_pairwise_l1(x), ref[np.triu_indices(n, 1)].mean(), rtol=1e-12)


def test_report_flags_copies_and_collapse():
    train = rng.integers(0, 256, (100, 28, 28), dtype=np.uint8)
    test = rng.integers(0, 256, (30, 28, 28), dtype=np.uint8)
    copies = train[:30]
    collapsed = np.repeat(test[:1], 30, axis=0)
    copied = metrics.l1_details(copies, test, train)
    assert copied.figures["l1_nearest_train_gen"] == 0 and copied.figures["memorization_ratio"] == 0
    assert np.array_equal(copied.gen_arg, np.arange(30)) and not copied.gen_nn.any()
    m = metrics.l1_details(collapsed, test, train).figures
    assert m["l1_pairwise_gen"] == 0 and m["diversity_ratio"] == 0
    assert abs(m["l1_pairwise_real"] - metrics.mean_pairwise_l1(test)) < 1e-12


def test_per_class_diversity_leaves_out_small_classes_and_flags_a_collapsed_one():
    real = rng.integers(0, 256, (40, 28, 28), dtype=np.uint8)
    real_cls = np.repeat([0, 1, 2, 3], 10)
    gen = np.concatenate([real[:10], np.repeat(real[10:11], 10, axis=0), real[20:25]])
    gen_cls = np.repeat([0, 1, 2], [10, 10, 5])
    out = metrics.per_class_diversity(gen, gen_cls, real, real_cls, classes=4)
    assert set(out) == {0, 1}  # class 2 has 5 generated images, class 3 none
    assert out[0].ratio == pytest.approx(1.0) and out[1].ratio == 0 and out[1].num_generated == 10


def test_class_matched_rate_weighs_each_class_by_the_target_mix():
    cls = np.repeat([0, 1], 20)
    flags = np.concatenate([np.ones(20, bool), np.zeros(20, bool)])  # every class-0 image flagged
    assert metrics.class_matched_rate(flags, cls, np.zeros(7, int)) == 1.0
    assert metrics.class_matched_rate(flags, cls, np.repeat([0, 1], [3, 1])) == pytest.approx(0.75)
    # A class with too few real images takes the overall rate.
    assert metrics.class_matched_rate(flags, cls, np.full(4, 5)) == pytest.approx(0.5)


@pytest.mark.parametrize("ties", [False, True])
def test_mann_whitney_matches_scipy(ties):
    x, y = rng.normal(0, 1, 70), rng.normal(0.3, 1, 90)
    if ties:
        x, y = np.round(x, 1), np.round(y, 1)
    u, z = metrics.mann_whitney_z(x, y)
    ref = stats.mannwhitneyu(x, y, alternative="less", method="asymptotic", use_continuity=False)
    assert u == pytest.approx(ref.statistic, abs=1e-9)
    assert stats.norm.cdf(z) == pytest.approx(ref.pvalue, rel=1e-9)
    assert z < 0  # x is shifted below y


def test_classifier_score_and_class_metrics():
    probs = rng.dirichlet(np.full(10, 0.3), 200)
    marginal = probs.mean(axis=0)
    ref = np.exp(np.mean([stats.entropy(p, marginal) for p in probs]))
    assert metrics.classifier_score(probs) == pytest.approx(ref, rel=1e-9)
    assert metrics.classifier_score(np.eye(10)[np.arange(200) % 10]) == pytest.approx(10, rel=1e-6)
    assert metrics.classifier_score(np.tile(np.eye(10)[3], (50, 1))) == pytest.approx(1, rel=1e-6)

    hist = metrics.class_histogram(probs)
    np.testing.assert_allclose(hist, np.bincount(probs.argmax(1), minlength=10) / 200)
    p, q = np.full(10, 0.1), rng.dirichlet(np.ones(10))
    assert metrics.kl_divergence(p, q, eps=0) == pytest.approx(stats.entropy(p, q), rel=1e-9)
    assert metrics.entropy(q) == pytest.approx(stats.entropy(q), rel=1e-9)
    real = np.array([0.5, 0.5] + [0] * 8)
    assert metrics.modes_covered(np.array([0.95, 0.05] + [0] * 8), real, 0.2) == (1, 2)
    assert metrics.modes_covered(np.array([0.6, 0.4] + [0] * 8), real, 0.2) == (2, 2)


def test_frechet_distance_matches_sqrtm_formula():
    a = rng.normal(0, 1, (400, 6)) @ rng.normal(0, 1, (6, 6))
    b = rng.normal(0.5, 1.3, (300, 6))
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    ref = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
    assert metrics.frechet_distance(a, b) == pytest.approx(ref, rel=1e-8)
    assert abs(metrics.frechet_distance(a, a)) < 1e-8


def test_kid_matches_a_direct_double_sum():
    a, b = rng.normal(0, 1, (30, 4)), rng.normal(0.4, 1, (25, 4))

    def k(x, y):
        return (x @ y / 4 + 1) ** 3

    xx = sum(k(a[i], a[j]) for i in range(30) for j in range(30) if i != j) / (30 * 29)
    yy = sum(k(b[i], b[j]) for i in range(25) for j in range(25) if i != j) / (25 * 24)
    xy = sum(k(a[i], b[j]) for i in range(30) for j in range(25)) / (30 * 25)
    assert metrics.kid(a, b) == pytest.approx(xx + yy - 2 * xy, rel=1e-9)


def test_kid_subsets_are_the_mean_and_std_of_kid_over_draws():
    a, b = rng.normal(0, 1, (60, 4)), rng.normal(0.4, 1, (50, 4))
    mean, std = metrics.kid_subsets(a, b, subsets=7, size=20, seed=3)
    draw = np.random.default_rng(3)
    values = [metrics.kid(a[draw.choice(60, 20, replace=False)], b[draw.choice(50, 20, replace=False)])
              for _ in range(7)]
    assert (mean, std) == pytest.approx((np.mean(values), np.std(values)), rel=1e-12)
    assert metrics.kid_subsets(a, b, 3, 1000, 0) == pytest.approx(metrics.kid_subsets(a, b, 3, 50, 0))  # capped


def test_kid_subsets_tell_a_shift_from_sampling_noise():
    same = metrics.kid_subsets(rng.normal(0, 1, (2000, 8)), rng.normal(0, 1, (2000, 8)), 50, 1000, 0)
    shifted = metrics.kid_subsets(rng.normal(0, 1, (2000, 8)), rng.normal(0.3, 1, (2000, 8)), 50, 1000, 0)
    assert abs(same[0]) < 3 * same[1] and shifted[0] > 10 * shifted[1]


def test_prdc_matches_the_definitions():
    real, fake, k = rng.normal(0, 1, (40, 3)), rng.normal(0.7, 1, (35, 3)), 5

    def radius(x, i):
        return sorted(np.linalg.norm(x[i] - x[j]) for j in range(len(x)) if j != i)[k - 1]

    rr = [radius(real, i) for i in range(40)]
    rf = [radius(fake, j) for j in range(35)]
    d = lambda u, v: np.linalg.norm(u - v)  # noqa: E731
    precision = np.mean([any(d(real[i], f) < rr[i] for i in range(40)) for f in fake])
    recall = np.mean([any(d(r, fake[j]) < rf[j] for j in range(35)) for r in real])
    density = np.mean([sum(d(real[i], f) < rr[i] for i in range(40)) for f in fake]) / k
    coverage = np.mean([any(d(real[i], f) < rr[i] for f in fake) for i in range(40)])
    want = {"precision": precision, "recall": recall, "density": density, "coverage": coverage}
    assert metrics.prdc(real, fake, k) == pytest.approx(want)
    for block in (1, 7, 40, 1000):  # rows at a time: the same figures, whatever the block
        assert metrics.prdc(real, fake, k, block=block) == pytest.approx(want), block


@pytest.mark.slow
def test_prdc_memory_grows_with_n_not_n_squared():
    """13,000 points in blocks: the largest array is a block of rows, not 13,000^2
    doubles (1.35 GB for one matrix)."""
    import tracemalloc

    real, fake = rng.normal(0, 1, (13_000, 16)), rng.normal(0, 1, (13_000, 16))
    tracemalloc.start()
    got = metrics.prdc(real, fake, 5, block=256)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 200e6, peak  # one 256 x 13,000 float64 block is 27 MB
    assert 0.8 < got["precision"] <= 1 and 0.8 < got["recall"] <= 1  # one distribution: both high


def test_copying_statistic_is_the_share_weighted_mean_of_per_cell_scipy_tests():
    gen_d, real_d = rng.normal(0, 1, 300), rng.normal(0.2, 1, 200)
    gen_c, real_c = rng.integers(0, 3, 300), rng.integers(0, 4, 200)
    real_c[real_c == 3] = 2
    gen_c[:5] = 7  # a cell real data lacks is left out
    zs, ws = [], []
    for c in range(3):
        g, r = gen_d[gen_c == c], real_d[real_c == c]
        p = stats.mannwhitneyu(g, r, alternative="less", method="asymptotic", use_continuity=False).pvalue
        zs.append(stats.norm.ppf(p))
        ws.append(len(r))
    got = metrics.copying_statistic(gen_d, gen_c, real_d, real_c)
    assert got == pytest.approx(np.average(zs, weights=ws), rel=1e-6)


def test_portable_kernel_matches_cdist():
    """The non-x86 path, run here through a small numba wrapper."""
    import numba

    @numba.njit
    def all_pairs(a, b):
        out = np.empty((a.shape[0], b.shape[0]), np.int64)
        for i in range(a.shape[0]):
            for j in range(b.shape[0]):
                out[i, j] = metrics._sad_portable(a, i, b, j)
        return out

    a = rng.integers(0, 256, (9, 784), dtype=np.uint8)
    b = rng.integers(0, 256, (13, 784), dtype=np.uint8)
    np.testing.assert_array_equal(all_pairs(a, b), cdist(a.astype(float), b.astype(float), "cityblock"))
