"""Stacked MNIST (prepare.dataset: stacked): the set's construction, the per-channel
mode count against a direct count, the papers' modes and KL on generators of known
truth, PacGAN's packing and the papers' DCGAN at three channels."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline import archs, classifier, data, evaluate, layers, metrics, models
from pipeline.errors import StageError
from defaults import evaluate as evaluate_params
from defaults import prepare as prepare_params
from defaults import train as train_params

LEVEL = 25  # a synthetic digit d is an image of constant pixels d * LEVEL


def synthetic_digits(per_digit: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    y = np.random.default_rng(seed).permutation(np.repeat(np.arange(10), per_digit))
    return np.broadcast_to((y * LEVEL).astype(np.uint8)[:, None, None], (len(y), 28, 28)).copy(), y


def oracle_judge(temperature: float = 20.0):
    """A judge (features, probs) that reads a synthetic digit off its mean pixel:
    logits_k = T (2 s k - k^2) with s = 255 x / LEVEL, the softmax of -T (s - k)^2."""
    import keras

    inp = keras.Input((28, 28, 1))
    mean = keras.layers.GlobalAveragePooling2D()(inp)
    k = np.arange(10, dtype=np.float32)
    dense = keras.layers.Dense(10, activation="softmax")
    probs = dense(mean)
    dense.set_weights([temperature * 2 * (255.0 / LEVEL) * k[None, :], -temperature * k ** 2])
    return keras.Model(inp, [keras.layers.Concatenate()([mean, mean]), probs])


def test_every_code_appears_and_each_channel_carries_its_digit():
    x, y = synthetic_digits()
    images, codes = data.stack(x, y, 20_000, seed=3)
    assert images.shape == (20_000, 28, 28, 3) and images.dtype == np.uint8
    assert len(np.unique(codes)) == 1000  # P(a code missing) = 1000 (1 - 1/1000)^20000 < 1e-5
    digits = data.digits_of(codes)
    assert np.array_equal(images[:, 0, 0, :] // LEVEL, digits)
    assert np.all(images == images[:, :1, :1, :])  # whole channels, not mixed pixels
    again, codes_again = data.stack(x, y, 20_000, seed=3)
    assert np.array_equal(again, images) and np.array_equal(codes_again, codes)
    assert not np.array_equal(data.stack(x, y, 20_000, seed=4)[1], codes)


def test_training_set_draws_train_from_train_and_test_from_test():
    xa, ya = synthetic_digits(seed=0)
    xt, yt = synthetic_digits(seed=1)
    xt, yt = xt[yt < 5], yt[yt < 5]  # the test digits: 0-4 only
    ds = data.Mnist(xa, ya, xt, yt)
    p = prepare_params(dataset="stacked", stacked_train=3000, stacked_test=500)
    st = data.training_set(ds, p)
    assert st.x_train.shape == (3000, 28, 28, 3) and st.x_test.shape == (500, 28, 28, 3)
    assert data.digits_of(st.y_test).max() <= 4 and data.digits_of(st.y_train).max() == 9
    assert st.y_train.min() >= 0 and st.y_train.max() < 1000 and len(np.unique(st.y_train)) > 900
    assert data.channels_of(st) == 3 and data.channels_of(ds) == 1
    assert data.training_set(ds, prepare_params(dataset="mnist")) is ds


def test_the_per_channel_mode_counter_agrees_with_a_direct_count():
    x, y = synthetic_digits()
    images, codes = data.stack(x, y, 3000, seed=5)
    _, probs = classifier.embed(oracle_judge(), images)
    assert probs.shape == (3000, 1000) and np.allclose(probs.sum(1), 1)
    assert np.array_equal(probs.argmax(1), codes)
    hist = metrics.class_histogram(probs)
    assert np.allclose(hist * 3000, np.bincount(codes, minlength=1000))
    uniform = np.full(1000, 1e-3)
    assert metrics.modes_covered(hist, uniform, 0.0) == (len(np.unique(codes)), 1000)


@pytest.fixture(scope="module")
def stacked_sets():
    xa, ya = synthetic_digits(per_digit=30, seed=0)
    xt, yt = synthetic_digits(per_digit=30, seed=1)
    return data.training_set(data.Mnist(xa, ya, xt, yt),
                             prepare_params(dataset="stacked", stacked_train=4000, stacked_test=4000))


def papers_modes_and_kl(gen: np.ndarray, st: data.Mnist, n: int):
    p = evaluate_params(num_samples=n, l1_samples=0)
    scores = evaluate.score(gen, st.x_test[:n], st.y_test[:n], st.x_train, oracle_judge(), p)
    return scores.metrics, scores.verdict.as_dict()


def test_a_generator_of_ten_codes_gets_ten_modes_and_a_large_kl(stacked_sets):
    st = stacked_sets
    ten = np.unique(st.y_train)[:10]
    gen = np.concatenate([np.repeat(st.x_train[st.y_train == c][:1], 200, axis=0) for c in ten])
    m, v = papers_modes_and_kl(gen, st, len(gen))
    assert m["modes_covered"] == 10 and m["modes_expected"] == 1000
    assert m["class_kl"] == pytest.approx(np.log(100), rel=0.01)  # KL(uniform over 10 || uniform over 1000)
    assert v["mode_collapse"] and any("modes_covered=10" in r for r in v["reasons"])


def test_uniform_stacked_real_images_cover_about_all_modes_with_kl_near_zero(stacked_sets):
    st = stacked_sets
    m, _ = papers_modes_and_kl(st.x_train[:4000], st, 4000)
    # 4,000 uniform draws miss a code with probability e^-4: about 18 of 1,000, KL about 999 / 8000.
    assert m["modes_covered"] >= 960 and m["modes_expected"] == 1000
    assert m["class_kl"] < 0.2
    assert m["judge_accuracy_real"] == 1.0 and m["classifier_score_real"] > 500


@pytest.mark.slow
def test_the_floor_draws_real_held_out_images_afresh_for_each_seed(stacked_sets):
    """bench/stacked.py's floor: uniform real held-out triples at the evaluation's sample
    count cover about every mode, each seed a new draw, none the held-out set itself."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench import stacked

    xa, ya = synthetic_digits(per_digit=30, seed=0)
    xt, yt = synthetic_digits(per_digit=30, seed=1)
    pp = prepare_params(dataset="stacked", stacked_train=4000, stacked_test=4000)
    rows = stacked.floor(data.Mnist(xa, ya, xt, yt), pp, evaluate_params(num_samples=4000, l1_samples=0),
                         oracle_judge(), [0, 1])
    assert [r["seed"] for r in rows] == [0, 1] and all(r["samples"] == 4000 for r in rows)
    # 4,000 uniform draws: about 18 codes missed, KL about 999 / 8000 (as real held-out images above).
    assert all(r["modes_covered"] >= 960 and r["class_kl"] < 0.2 for r in rows), rows
    assert rows[0]["class_kl"] != rows[1]["class_kl"]  # two draws, not one
    # Not the held-out set the evaluation compares with: that would score a KL of exactly its own.
    same, _ = papers_modes_and_kl(stacked_sets.x_test[:4000], stacked_sets, 4000)
    assert all(r["class_kl"] != same["class_kl"] for r in rows)
    line = stacked.floor_row(rows)
    assert line.startswith("| real held-out images (the floor) |") and "4,000 samples" in line
    with pytest.raises(SystemExit, match="prepare.dataset is mnist"):
        stacked.floor(data.Mnist(xa, ya, xt, yt), prepare_params(dataset="mnist"), evaluate_params(), None, [0])


def test_the_papers_kl_against_a_direct_formula():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 1000, 26_000)
    counts = np.bincount(codes, minlength=1000)
    p = counts / counts.sum()
    direct = float(np.sum(p[p > 0] * np.log(p[p > 0] * 1000)))
    assert metrics.kl_divergence(p, np.full(1000, 1e-3)) == pytest.approx(direct, abs=2e-3)
    assert direct < 0.05  # 26,000 uniform draws: about 999 / 52,000


def test_pack_concatenates_consecutive_images_along_channels():
    x = np.arange(4 * 2 * 2 * 3, dtype=np.float32).reshape(4, 2, 2, 3)
    out = layers.Pack(2)(x).numpy()
    assert out.shape == (2, 2, 2, 6)
    assert np.array_equal(out[1], np.concatenate([x[2], x[3]], axis=-1))


@pytest.mark.parametrize("arch", archs.NAMES)
def test_every_arch_draws_three_channels_and_judges_packs(arch):
    p = train_params(arch=arch, z_dim=16, virtual_labels=0, pack=2, batch_size=4)
    g, d = models.build_generator(p, channels=3), models.build_discriminator(p, channels=3)
    img = g(np.random.default_rng(0).standard_normal((4, 16)).astype("float32")).numpy()
    assert img.shape == (4, 28, 28, 3) and np.abs(img).max() <= 1
    assert d(img).shape == (2, 1)  # one score per pack of two


def test_the_papers_dcgan_layers():
    p = train_params(arch="dcgan_paper", d_arch=None)
    g, d = models.build_generator(p, 3), models.build_discriminator(p, 3)
    shapes = [tuple(l.output.shape[1:]) for l in g.layers if l.__class__.__name__ in ("Conv2DTranspose", "Cropping2D")]
    assert shapes == [(4, 4, 256), (8, 8, 128), (7, 7, 128), (14, 14, 64), (28, 28, 3)]
    assert [l.filters for l in d.layers if l.__class__.__name__ == "Conv2D"] == [64, 128, 256, 512]


def test_pack_must_divide_the_batch():
    with pytest.raises(StageError, match="multiple of train.pack=3"):
        train_params(batch_size=64, pack=3)


@pytest.mark.slow
@pytest.mark.parametrize("arch,loss", [("dcgan", "bce"), ("dcgan_paper", "wgan-gp"), ("mlp", "hinge")])
def test_a_packed_gan_trains_on_stacked_images(arch, loss):
    """Packing with any loss: D sees real and generated images in packs (in one pass where
    D has no batch statistics, dcgan; in two where it has, dcgan_paper)."""
    from pipeline import train

    p = train_params(arch=arch, loss=loss, z_dim=8, virtual_labels=0, batch_size=8, pack=2, steps=2, jit_compile=False, standing_samples=64,
                    dcgan={"g_filters": [8, 4, 1], "g_strides": [2, 2, 1], "d_filters": [8, 8],
                           "d_strides": [2, 2], "kernel_size": 3},
                    dcgan_paper={"gf": 4, "df": 4}, mlp={"g_units": [16], "d_units": [16]})
    gan = train.build(p, "float32", channels=3)
    x, y = synthetic_digits()
    images, _ = data.stack(x, y, 64, seed=0)
    history = train.fit(gan, p, images, verbose=0)
    assert len(history.rows) == 2 and all(np.isfinite(r["d_loss"]) for r in history.rows)
    assert gan.sampler(np.zeros((2, 8), np.float32)).shape == (2, 28, 28, 3)



@pytest.mark.slow
@pytest.mark.parametrize("loss,jit", [("bce", True), ("wgan-gp", False)])
def test_a_gan_with_its_channels_drawn_and_judged_apart_trains_on_stacked_images(loss, jit):
    """Both networks one-channel (train.channel_draw, channel_judge: independent), under XLA
    and under a gradient penalty, which reaches the image through the channel split."""
    from pipeline import train

    p = train_params(arch="mlp", loss=loss, z_dim=12, virtual_labels=3, batch_size=8, steps=2, jit_compile=jit,
                     standing_samples=64, channel_draw="independent", channel_judge="independent",
                     mlp={"g_units": [16], "d_units": [16]})
    gan = train.build(p, "float32", channels=3)
    x, y = synthetic_digits()
    images, _ = data.stack(x, y, 64, seed=0)
    history = train.fit(gan, p, images, verbose=0)
    assert len(history.rows) == 2 and all(np.isfinite(r["d_loss"]) for r in history.rows)
    assert gan.sampler(np.zeros((2, 12), np.float32)).shape == (2, 28, 28, 3)

def test_each_kind_of_generator_has_its_own_registered_model_and_bento_name():
    from serving import contract

    names = [contract.registered_model(kind) for kind in contract.KINDS]
    bentos = [contract.bento_model(kind) for kind in contract.KINDS]
    assert len(set(names)) == len(set(bentos)) == len(contract.KINDS)
    assert contract.registered_model("digits") == contract.REGISTERED_MODEL
    assert contract.kind_of({"output": {"shape": [None, 28, 28, 3]}}) == "stacked"  # a card from before kinds
    assert contract.kind_of({"output": {"shape": [None, 28, 28, 1]}}) == "digits"
    with pytest.raises(ValueError, match="allowed values: digits, conditional, stacked"):
        contract.registered_model("rgb")
