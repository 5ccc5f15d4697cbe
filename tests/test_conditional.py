"""Class-conditional training (train.condition): every arch takes (z, digit) in G and
(image, digit) in D under each way of conditioning, D reads the digit, the digits
G is asked for are class-balanced and keyed on (seed, step) as the noise is, a run
resumed from its checkpoint is the run that never stopped, and the data's labels
travel with their images."""
from __future__ import annotations

import numpy as np
import pytest

from defaults import train as train_params
from pipeline import archs, data, train
from pipeline.checkpoint import TrainState
from pipeline.errors import StageError
from pipeline.models import build_discriminator, build_generator, digit_input, generate, load_generator

SMALL = dict(dcgan={"g_filters": [16, 8, 4, 1], "d_filters": [8, 8, 16, 16]},
             dcgan_upsample={"g_dense_shape": [7, 7, 8], "g_filters": [16, 8, 8, 1], "d_filters": [8, 8, 16, 16]},
             dcgan_paper={"gf": 8, "df": 8})
CONDITIONS = [c for c in archs.CONDITIONS if c != "none"]


def small(**changes):
    return train_params(**SMALL, z_dim=8, virtual_labels=0, jit_compile=False, sample_every=1000,
                        checkpoint_every=1000, standing_samples=64, **changes)


def labelled_digits(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images whose label is written in them: digit k lights row 2k."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    x = rng.integers(0, 40, (n, 28, 28), dtype=np.uint8)
    x[np.arange(n), 2 * y] = 255
    return x, y


@pytest.mark.parametrize("condition", CONDITIONS)
@pytest.mark.parametrize("arch", archs.NAMES)
def test_every_arch_takes_the_digit_in_both_networks(arch, condition):
    p = small(arch=arch, condition=condition, pack=2, batch_size=4)
    g, d = build_generator(p), build_discriminator(p)
    assert digit_input(g) == 1 and [t.name for t in g.inputs] == ["z", "digit"]
    z = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    images = g([z, np.array([0, 1, 2, 3])]).numpy()
    assert images.shape == (4, 28, 28, 1)
    # D judges packs of two (image, digit) pairs, and another digit changes its verdict.
    a = d([images, np.array([0, 1, 2, 3])]).numpy()
    b = d([images, np.array([5, 1, 2, 3])]).numpy()
    assert a.shape == (2, 1) and a[0, 0] != b[0, 0] and a[1, 0] == b[1, 0]


def test_the_generator_draws_what_its_digit_asks():
    g = build_generator(small(condition="concat"))
    z = np.zeros((2, 8), np.float32)
    assert not np.allclose(generate(g, z, np.array([3, 3])), generate(g, z, np.array([3, 4]))[1:2].repeat(2, 0))
    with pytest.raises(ValueError, match="digits"):
        generate(g, z)


def test_the_digits_asked_for_are_balanced_and_keyed_on_seed_and_step():
    p = small(condition="concat", batch_size=40)
    gan, again, other = train.build(p), train.build(p), train.build(small(condition="concat", batch_size=40, seed=7))
    first = gan._digits(40, 0).numpy()
    assert np.bincount(first, minlength=10).tolist() == [4] * 10  # each digit alike in every batch
    assert np.array_equal(first, again._digits(40, 0).numpy())    # the same seed and step: the same digits
    assert not np.array_equal(first, other._digits(40, 0).numpy())
    assert not np.array_equal(first, gan._digits(40, 1).numpy())  # another draw of the step
    gan.step.assign(5)
    assert not np.array_equal(first, gan._digits(40, 0).numpy())  # another step


def test_the_dataset_keeps_each_label_with_its_image():
    x, y = labelled_digits()
    ds = train.dataset(x, batch_size=16, seed=3, n_critic=2, y=y)
    for images, labels in ds.take(3):
        assert images.shape == (16, 2, 28, 28, 1) and labels.shape == (16, 2)
        lit = np.argmax(images.numpy()[..., 0].mean(axis=-1)[..., ::2], axis=-1)  # the row each image lights
        assert np.array_equal(lit, labels.numpy())


@pytest.mark.slow
def test_a_resumed_conditional_run_is_the_run_that_never_stopped(tmp_path):
    x, y = labelled_digits(120)
    p = small(condition="projection", steps=6, batch_size=20, ema=0.9)
    straight = train.build(p)
    rows = train.fit(straight, p, x, y=y, verbose=0).rows

    first = train.build(p)
    state = TrainState(tmp_path, first, "f")
    train.fit(first, p.model_copy(update={"steps": 3}), x, y=y, state=state, verbose=0)
    state.save(3, [])
    resumed = train.build(p)
    start, _ = TrainState(tmp_path, resumed, "f").restore()
    rest = train.fit(resumed, p, x, y=y, start=start, verbose=0).rows
    assert start == 3 and [(r["d_loss"], r["g_loss"]) for r in rest] == \
        [(r["d_loss"], r["g_loss"]) for r in rows[3:]]
    assert all(np.array_equal(a, b) for a, b in zip(resumed.sampler.get_weights(), straight.sampler.get_weights()))


def test_a_conditional_generator_saves_and_loads_with_its_digit_input(tmp_path):
    from pipeline.gan import float32_copy, standing_statistics

    p = small(condition="projection", arch="dcgan")
    g = standing_statistics(float32_copy(build_generator(p)), seed=0, samples=64)  # fewer than one default batch
    g.save(tmp_path / "g.keras")
    loaded = load_generator(tmp_path / "g.keras")
    z, digits = np.ones((3, 8), np.float32), np.array([7, 0, 9])
    assert np.allclose(generate(loaded, z, digits), generate(g, z, digits), atol=1e-6)


def test_stacked_mnist_cannot_be_conditioned_on_a_digit():
    x, y = labelled_digits(40)
    stacked = data.Mnist(np.repeat(x[..., None], 3, -1), y, x[:4], y[:4])
    with pytest.raises(StageError, match="train.condition: concat .* prepare.dataset: stacked"):
        train.labels_for(small(condition="concat"), stacked)
    assert train.labels_for(small(condition="none"), stacked) is None
