"""The evaluation's math: L1 nearest-neighbour kernels, the data-copying test,
class (mode) metrics and distances between feature distributions.

L1 is seed 002's mean |a - b| over pixels in [0, 1]. Images are 8-bit
(n, 28, 28) arrays, as PNG stores them; distances are computed exactly in
integers and reported divided by 255 * d, so they equal
`np.mean(np.abs(a / 255 - b / 255))`. The kernels hold no (n, m) distance
matrix: memory stays O(n + m) whatever the sizes.

Speed: on x86-64 a row is a loop of `psadbw` (sum of absolute differences of
16 byte pairs, SSE2, or 32 with AVX2) into a vector accumulator, and a block
of queries shares every reference row while it sits in L1 cache.
Elsewhere a portable loop that LLVM vectorises computes the same integers.
`bench/eval_speed.py` compares it with scipy's `cdist`.
"""
from __future__ import annotations

import platform
from typing import NamedTuple

import numba
import numpy as np
from numba.core import cgutils, types
from numba.extending import intrinsic
import llvmlite.binding as llvm_binding
from llvmlite import ir

_BIG = np.int64(1) << 62
# Queries per reference row: enough to reuse each row from L1 cache, few enough for the
# accumulators to stay in registers (bench/eval_speed.py compares block sizes).
_QUERY_BLOCK = 8
_X86 = platform.machine().lower() in ("x86_64", "amd64")
# SSE2 is part of x86-64, so every x86-64 CPU has the 16-byte psadbw; AVX2's
# 32-byte one does twice the work per instruction where the CPU has it.
_AVX2 = _X86 and bool(llvm_binding.get_host_cpu_features().get("avx2"))
_LANES = 32 if _AVX2 else 16
_PSADBW = "llvm.x86.avx2.psad.bw" if _AVX2 else "llvm.x86.sse2.psad.bw"


@intrinsic
def _row_sad(typingctx, a, i, b, j):
    """sum |a[i] - b[j]| over a row of C-contiguous uint8 2-d arrays whose width is a
    multiple of _LANES: a loop of psadbw into a vector accumulator, reduced once at
    the end (a reduction per slice would serialize the loop on it)."""
    sig = types.int64(a, i, b, j)

    def codegen(context, builder, signature, args):
        aa, ii, bb, jj = args
        i64 = ir.IntType(64)
        vec, acc_t = ir.VectorType(ir.IntType(8), _LANES), ir.VectorType(i64, _LANES // 8)

        def row(arr, arrty, r):
            st = cgutils.create_struct_proxy(arrty)(context, builder, value=arr)
            stride = cgutils.unpack_tuple(builder, st.strides, 2)[0]
            ncol = cgutils.unpack_tuple(builder, st.shape, 2)[1]
            return builder.gep(st.data, [builder.mul(r, stride)]), ncol

        pa, ncol = row(aa, signature.args[0], ii)
        pb, _ = row(bb, signature.args[2], jj)
        n = builder.udiv(ncol, ir.Constant(i64, _LANES))
        psadbw = cgutils.get_or_insert_function(builder.module, ir.FunctionType(acc_t, [vec, vec]), _PSADBW)
        zero = ir.Constant(acc_t, [0] * (_LANES // 8))
        pre = builder.block
        loop, done = builder.append_basic_block("sad_loop"), builder.append_basic_block("sad_done")
        builder.cbranch(builder.icmp_unsigned(">", n, ir.Constant(i64, 0)), loop, done)

        builder.position_at_end(loop)
        k, acc = builder.phi(i64), builder.phi(acc_t)
        off = builder.mul(k, ir.Constant(i64, _LANES))
        va = builder.load(builder.bitcast(builder.gep(pa, [off]), vec.as_pointer()), align=1)
        vb = builder.load(builder.bitcast(builder.gep(pb, [off]), vec.as_pointer()), align=1)
        acc_next = builder.add(acc, builder.call(psadbw, [va, vb]))
        k_next = builder.add(k, ir.Constant(i64, 1))
        k.add_incoming(ir.Constant(i64, 0), pre)
        k.add_incoming(k_next, loop)
        acc.add_incoming(zero, pre)
        acc.add_incoming(acc_next, loop)
        builder.cbranch(builder.icmp_unsigned("<", k_next, n), loop, done)

        builder.position_at_end(done)
        total = builder.phi(acc_t)
        total.add_incoming(zero, pre)
        total.add_incoming(acc_next, loop)
        out = builder.extract_element(total, ir.Constant(ir.IntType(32), 0))
        for t in range(1, _LANES // 8):
            out = builder.add(out, builder.extract_element(total, ir.Constant(ir.IntType(32), t)))
        return out

    return sig, codegen


@numba.njit(inline="always")
def _sad_x86(a, i, b, j):
    return _row_sad(a, i, b, j)


@numba.njit(inline="always")
def _sad_portable(a, i, b, j):
    # int32 lanes: numba would otherwise widen every term to int64 and halve the vector width.
    s = np.int32(0)
    for k in range(a.shape[1]):
        s = np.int32(s + np.int32(abs(np.int32(a[i, k]) - np.int32(b[j, k]))))
    return np.int64(s)


_sad = _sad_x86 if _X86 else _sad_portable


@numba.njit(parallel=True, cache=True)
def _nearest(q, ref, exclude_self):
    nq = q.shape[0]
    best = np.full(nq, _BIG, np.int64)
    arg = np.full(nq, -1, np.int64)
    for blk in numba.prange((nq + _QUERY_BLOCK - 1) // _QUERY_BLOCK):
        i0 = blk * _QUERY_BLOCK
        i1 = min(nq, i0 + _QUERY_BLOCK)
        for j in range(ref.shape[0]):
            for i in range(i0, i1):
                if exclude_self and i == j:
                    continue
                s = _sad(q, i, ref, j)
                if s < best[i]:  # strict: ties keep the first index, as argmin does
                    best[i] = s
                    arg[i] = j
    return best, arg


@numba.njit(parallel=True, cache=True)
def _pairwise_row_sums(x):
    n = x.shape[0]
    rows = np.zeros(n, np.int64)
    for blk in numba.prange((n + _QUERY_BLOCK - 1) // _QUERY_BLOCK):
        i0 = blk * _QUERY_BLOCK
        i1 = min(n, i0 + _QUERY_BLOCK)
        for j in range(i0 + 1, n):
            for i in range(i0, min(i1, j)):
                rows[i] += _sad(x, i, x, j)
    return rows


def _flat(x: np.ndarray) -> np.ndarray:
    """(n, ...) uint8 to C-contiguous (n, d) with d padded by zeros to whole psadbw lanes;
    zero columns add nothing to any distance."""
    x = np.asarray(x)
    if x.dtype != np.uint8:
        raise TypeError(f"expected uint8 pixels, got {x.dtype}")
    flat = x.reshape(len(x), -1)
    pad = -flat.shape[1] % _LANES
    if pad:
        flat = np.concatenate([flat, np.zeros((len(flat), pad), np.uint8)], axis=1)
    return np.ascontiguousarray(flat)


def _pixels(x: np.ndarray) -> int:
    return int(np.prod(np.shape(x)[1:]))


def nearest_l1(queries: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each query image: the L1 to its nearest reference image, and that image's index."""
    q, r = _flat(queries), _flat(reference)
    if len(r) == 0:
        raise ValueError("empty reference set")
    best, arg = _nearest(q, r, False)
    return best / (255.0 * _pixels(queries)), arg


def nearest_other_l1(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each image: the L1 to the nearest *other* image of the same set, and its index."""
    x = _flat(images)
    if len(x) < 2:
        raise ValueError("need at least two images")
    best, arg = _nearest(x, x, True)
    return best / (255.0 * _pixels(images)), arg


def mean_pairwise_l1(images: np.ndarray) -> float:
    """Mean L1 over all unordered pairs of distinct images."""
    x = _flat(images)
    n = len(x)
    if n < 2:
        raise ValueError("need at least two images")
    total = int(_pairwise_row_sums(x).sum())
    return total / (n * (n - 1) / 2) / (255.0 * _pixels(images))


class L1(NamedTuple):
    figures: dict[str, float]   # memorization and diversity, each beside the same figure on held-out images
    gen_nn: np.ndarray          # per generated image: L1 to its nearest training image
    gen_arg: np.ndarray         # and that image's index
    real_nn: np.ndarray         # per held-out image: L1 to its nearest training image


def l1_details(generated, real_test, train) -> L1:
    """Memorization and diversity against the same computation on real held-out images,
    with the per-image nearest-train distances that the copying test and the figures reuse."""
    gen_nn, gen_arg = nearest_l1(generated, train)
    real_nn, _ = nearest_l1(real_test, train)
    m = {
        "l1_nearest_train_gen": float(gen_nn.mean()),
        "l1_nearest_train_real": float(real_nn.mean()),
        "l1_pairwise_gen": mean_pairwise_l1(generated),
        "l1_pairwise_real": mean_pairwise_l1(real_test),
    }
    m["memorization_ratio"] = m["l1_nearest_train_gen"] / max(m["l1_nearest_train_real"], 1e-12)
    m["diversity_ratio"] = m["l1_pairwise_gen"] / max(m["l1_pairwise_real"], 1e-12)
    return L1(m, gen_nn, gen_arg, real_nn)


# Per-class figures need a few images of the class on both sides to mean anything.
MIN_CLASS_IMAGES = 10


class ClassDiversity(NamedTuple):
    num_generated: int
    num_real: int
    l1_pairwise_gen: float
    l1_pairwise_real: float
    ratio: float


def per_class_diversity(gen, gen_cls, real, real_cls, classes: int = 10) -> dict[int, ClassDiversity]:
    """Mean pairwise L1 inside each class on both sides; classes too small on either side are left out."""
    out = {}
    for c in range(classes):
        g, r = gen[gen_cls == c], real[real_cls == c]
        if len(g) >= MIN_CLASS_IMAGES and len(r) >= MIN_CLASS_IMAGES:
            pg, pr = mean_pairwise_l1(g), mean_pairwise_l1(r)
            out[c] = ClassDiversity(len(g), len(r), pg, pr, pg / max(pr, 1e-12))
    return out


class DigitFigures(NamedTuple):
    """A conditional generator's images of one requested digit against held-out images of that digit."""
    num_generated: int
    num_real: int
    accuracy_gen: float      # share the judge reads as the digit
    accuracy_real: float
    fcd: float
    precision: float
    recall: float
    l1_pairwise_gen: float
    l1_pairwise_real: float
    diversity_ratio: float


def digit_figures(digit: int, gen: tuple, real: tuple, k: int) -> DigitFigures:
    """gen and real: the digit's (8-bit images, judge features, judge probabilities);
    k is capped so that each side has k other points."""
    (g, f_gen, p_gen), (r, f_real, p_real) = gen, real
    k = min(k, len(g) - 1, len(r) - 1)
    pr = prdc(f_real, f_gen, k)
    pair_gen, pair_real = mean_pairwise_l1(g), mean_pairwise_l1(r)
    return DigitFigures(len(g), len(r), label_accuracy(p_gen, np.full(len(g), digit)),
                        label_accuracy(p_real, np.full(len(r), digit)), frechet_distance(f_gen, f_real),
                        pr["precision"], pr["recall"], pair_gen, pair_real, pair_gen / max(pair_real, 1e-12))


def class_matched_rate(flags: np.ndarray, cls: np.ndarray, target_cls: np.ndarray) -> float:
    """The rate of `flags` among real images, reweighted to the class mix of `target_cls`:
    "1"s sit much nearer their training neighbours than "8"s, so a generator of many
    "1"s is held to real "1"s' rate, not to the all-digit rate."""
    overall = float(flags.mean())
    rate = 0.0
    for c, count in zip(*np.unique(target_cls, return_counts=True)):
        mine = flags[cls == c]
        rate += count * (float(mine.mean()) if len(mine) >= MIN_CLASS_IMAGES else overall)
    return rate / max(len(target_cls), 1)


# --- the data-copying test (Meehan, Chaudhuri, Dasgupta 2020) ---------------

def mann_whitney_z(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """U = #{(i, j): x_i > y_j} + ties / 2, and its z-score under H0 with the tie correction.

    With x the generated images' nearest-training distances and y the held-out
    images', z << 0 means generated images sit closer to the training set than
    new real data does: data copying (Meehan et al.'s Z_U, on one cell)."""
    from scipy.stats import rankdata

    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    m, n = len(x), len(y)
    if m == 0 or n == 0:
        raise ValueError("both samples must be non-empty")
    both = np.concatenate([x, y])
    ranks = rankdata(both)
    u = float(ranks[:m].sum() - m * (m + 1) / 2)
    _, counts = np.unique(both, return_counts=True)
    tie = float((counts ** 3 - counts).sum())
    var = m * n / 12.0 * ((m + n + 1) - tie / ((m + n) * (m + n - 1)))
    z = (u - m * n / 2.0) / np.sqrt(var) if var > 0 else 0.0
    return u, float(z)


def copying_statistic(gen_d, gen_cell, real_d, real_cell, min_count: int = MIN_CLASS_IMAGES) -> float:
    """Meehan et al.'s C_T: the Mann-Whitney z of each cell, averaged with the real data's
    cell shares as weights, over the cells holding at least `min_count` images on both sides.

    Cells here are the judge's classes: a generator that draws only "1"s (which lie
    closer to their neighbours than other digits do) is then compared with real
    "1"s, not with all digits, and is not mistaken for a copier. With no cell large
    enough it falls back to the test over all images."""
    gen_d, real_d = np.asarray(gen_d), np.asarray(real_d)
    zs, weights = [], []
    for c in np.unique(real_cell):
        g, r = gen_d[gen_cell == c], real_d[real_cell == c]
        if len(g) >= min_count and len(r) >= min_count:
            zs.append(mann_whitney_z(g, r)[1])
            weights.append(len(r))
    if not zs:
        return mann_whitney_z(gen_d, real_d)[1]
    return float(np.average(zs, weights=weights))


# --- class (mode) metrics from the judge's softmax ---------------------------

def class_histogram(probs: np.ndarray) -> np.ndarray:
    """Share of images per predicted class, (classes,)."""
    pred = np.asarray(probs).argmax(axis=1)
    return np.bincount(pred, minlength=probs.shape[1]) / max(len(pred), 1)


def kl_divergence(p: np.ndarray, q: np.ndarray, eps: float = 1e-6) -> float:
    """KL(p || q) in nats; eps keeps a class that q lacks finite but large."""
    p = np.asarray(p, np.float64) + eps
    q = np.asarray(q, np.float64) + eps
    p, q = p / p.sum(), q / q.sum()
    return float(np.sum(p * np.log(p / q)))


def entropy(p: np.ndarray) -> float:
    p = np.asarray(p, np.float64)
    p = p[p > 0]
    return float(-np.sum(p * np.log(p)))


def classifier_score(probs: np.ndarray, eps: float = 1e-12) -> float:
    """TF-GAN's mnist_score: exp E_x[KL(p(y|x) || p(y))]; 1 (useless) to the class count (ideal)."""
    probs = np.asarray(probs, np.float64)
    marginal = probs.mean(axis=0)
    kl = np.sum(probs * (np.log(probs + eps) - np.log(marginal + eps)), axis=1)
    return float(np.exp(kl.mean()))


def label_accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    """Share of images whose most likely class is their label (for a conditional
    generator's images: the digit they were asked for)."""
    return float(np.mean(np.asarray(probs).argmax(axis=1) == np.asarray(labels)))


def cross_entropy(probs: np.ndarray, labels: np.ndarray, eps: float = 1e-12) -> float:
    """TF-GAN's mnist_cross_entropy: the mean of -log p(label | x) under the classifier's
    softmax, in nats; 0 when it is sure of every label, large when it reads another class."""
    probs = np.asarray(probs, np.float64)
    return float(-np.mean(np.log(probs[np.arange(len(probs)), np.asarray(labels)] + eps)))


def modes_covered(gen_hist: np.ndarray, real_hist: np.ndarray, min_share: float) -> tuple[int, int]:
    """(covered, present): classes real data holds, and those of them the generator
    fills to at least `min_share` of the real share, and at least once (min_share 0:
    VEEGAN's and PacGAN's count of modes drawn)."""
    present = real_hist > 0
    covered = present & (gen_hist > 0) & (gen_hist >= min_share * real_hist)
    return int(covered.sum()), int(present.sum())


# --- distances between feature distributions --------------------------------

def frechet_distance(f1: np.ndarray, f2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^1/2), with tr (S1 S2)^1/2 from the
    eigenvalues of the symmetric S1^1/2 S2 S1^1/2 (stable where sqrtm of a
    near-singular product is not)."""
    mu1, mu2 = f1.mean(axis=0), f2.mean(axis=0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.linalg.eigvalsh(root1 @ s2 @ root1)
    tr_sqrt = np.sqrt(np.clip(cross, 0, None)).sum()
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)


def kid(f1: np.ndarray, f2: np.ndarray) -> float:
    """Unbiased MMD^2 with the polynomial kernel k(x, y) = (x.y / d + 1)^3 (Binkowski et al. 2018)."""
    d = f1.shape[1]
    m, n = len(f1), len(f2)
    kxx = (f1 @ f1.T / d + 1) ** 3
    kyy = (f2 @ f2.T / d + 1) ** 3
    kxy = (f1 @ f2.T / d + 1) ** 3
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1))
                 + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2 * kxy.mean())


def kid_subsets(f1: np.ndarray, f2: np.ndarray, subsets: int, size: int, seed: int) -> tuple[float, float]:
    """KID as TF-GAN and torch-fidelity report it: the mean and standard deviation of
    `kid` over `subsets` draws of `size` points from each set, without replacement
    within a draw (capped at the smaller set)."""
    size = min(size, len(f1), len(f2))
    rng = np.random.default_rng(seed)
    values = [kid(f1[rng.choice(len(f1), size, replace=False)], f2[rng.choice(len(f2), size, replace=False)])
              for _ in range(subsets)]
    return float(np.mean(values)), float(np.std(values))


PRDC_BLOCK = 1024  # rows of a distance matrix computed at once: memory O(block x n), not O(n^2)


def _sq_norms(x: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", x, x)


def _distances(a: np.ndarray, a_sq: np.ndarray, b: np.ndarray, b_sq: np.ndarray) -> np.ndarray:
    """Euclidean distances of a's rows to b's from their squared norms, as |a|^2 + |b|^2 - 2 a.b:
    one BLAS matrix product on every core instead of scipy's cdist loop on one, one
    (len(a), len(b)) array in memory (docs/stacked.md)."""
    d = a @ b.T
    d *= -2.0
    d += a_sq[:, None]
    d += b_sq[None, :]
    np.maximum(d, 0.0, out=d)
    return np.sqrt(d, out=d)


def _kth_radius(x: np.ndarray, k: int, block: int) -> np.ndarray:
    """Each point's distance to its k-th nearest other point (column 0 is itself)."""
    sq = _sq_norms(x)
    # copy(): a column view would keep its whole block alive until the end.
    return np.concatenate([np.partition(_distances(x[i:i + block], sq[i:i + block], x, sq), k, axis=1)[:, k].copy()
                           for i in range(0, len(x), block)])


def prdc(real: np.ndarray, fake: np.ndarray, k: int = 5, block: int = PRDC_BLOCK) -> dict[str, float]:
    """Precision, recall (Kynkäänniemi et al. 2019), density and coverage (Naeem et al. 2020)
    with k-nearest-neighbour balls in feature space, Euclidean. Distances are taken
    `block` rows at a time, so that 26,000 points need megabytes, not gigabytes;
    the figures are the same for every block size."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    real_sq, fake_sq = _sq_norms(real), _sq_norms(fake)
    r_real, r_fake = _kth_radius(real, k, block), _kth_radius(fake, k, block)
    fake_in_real = np.zeros(len(fake), bool)    # precision: a fake inside some real ball
    balls_per_fake = np.zeros(len(fake), np.int64)  # density
    real_in_fake = np.empty(len(real), bool)    # recall: a real inside some fake ball
    covered = np.empty(len(real), bool)         # coverage: a real ball holding a fake
    for i in range(0, len(real), block):
        d = _distances(real[i:i + block], real_sq[i:i + block], fake, fake_sq)
        inside = d < r_real[i:i + block, None]
        fake_in_real |= inside.any(axis=0)
        balls_per_fake += inside.sum(axis=0)
        real_in_fake[i:i + block] = (d < r_fake[None, :]).any(axis=1)
        covered[i:i + block] = d.min(axis=1) < r_real[i:i + block]
    return {
        "precision": float(fake_in_real.mean()),
        "recall": float(real_in_fake.mean()),
        "density": float(balls_per_fake.mean() / k),
        "coverage": float(covered.mean()),
    }
