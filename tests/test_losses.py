import numpy as np
import pytest
import tensorflow as tf

from pipeline import losses


class Quadratic(tf.Module):
    """critic(x) = sum(c * x^2): gradient 2 c x, so the penalty has a closed form."""

    def __init__(self, c):
        self.c = tf.constant(c, tf.float32)

    def __call__(self, x, training=False):
        return tf.reduce_sum(self.c * tf.square(x), axis=[1, 2, 3])[:, None]


def test_gradient_penalty_hand_computed():
    rng = np.random.default_rng(0)
    real = rng.standard_normal((3, 4, 4, 1)).astype(np.float32)
    fake = rng.standard_normal((3, 4, 4, 1)).astype(np.float32)
    alpha = np.array([0.0, 0.25, 1.0], np.float32).reshape(3, 1, 1, 1)
    c = rng.uniform(0.5, 2.0, (4, 4, 1)).astype(np.float32)
    x_hat = alpha * real + (1 - alpha) * fake
    norms = np.sqrt(((2 * c * x_hat) ** 2).sum(axis=(1, 2, 3)))
    expected = np.mean((norms - 1) ** 2)
    got = float(losses.gradient_penalty(Quadratic(c), real, fake, alpha))
    assert got == pytest.approx(expected, rel=1e-5)


def test_gradient_penalty_zero_for_unit_slope_linear_critic():
    w = np.zeros((4, 4, 1), np.float32)
    w[0, 0, 0] = 1.0  # critic(x) = x[0, 0]: gradient norm exactly 1 everywhere

    class Linear(tf.Module):
        def __call__(self, x, training=False):
            return tf.reduce_sum(w * x, axis=[1, 2, 3])[:, None]

    x = np.ones((2, 4, 4, 1), np.float32)
    assert float(losses.gradient_penalty(Linear(), x, -x, np.full((2, 1, 1, 1), 0.3, np.float32))) < 1e-6


def test_r1_penalty_hand_computed():
    """R1 = mean over real images of ||grad_x D(x)||^2: for sum(c x^2) that is sum((2 c x)^2),
    at the real images only (no interpolation, no target norm)."""
    rng = np.random.default_rng(1)
    real = rng.standard_normal((3, 4, 4, 1)).astype(np.float32)
    c = rng.uniform(0.5, 2.0, (4, 4, 1)).astype(np.float32)
    expected = np.mean(((2 * c * real) ** 2).sum(axis=(1, 2, 3)))
    assert float(losses.r1_penalty(Quadratic(c), real)) == pytest.approx(expected, rel=1e-5)
    assert float(losses.r1_penalty(Quadratic(c), np.zeros_like(real))) == 0.0  # flat at the data: no penalty


def test_loss_values():
    real = tf.constant([[2.0], [0.5]])
    fake = tf.constant([[-1.0], [0.0]])
    sp = lambda v: np.log1p(np.exp(v))  # softplus
    bce, wgan, hinge = (losses.REGISTRY[name] for name in ("bce", "wgan", "hinge"))
    assert float(bce.d(real, fake)) == pytest.approx(
        np.mean(sp(-np.array([2.0, 0.5]))) + np.mean(sp(np.array([-1.0, 0.0]))), rel=1e-6)
    assert float(bce.g(fake)) == pytest.approx(np.mean(sp(-np.array([-1.0, 0.0]))), rel=1e-6)
    assert float(wgan.d(real, fake)) == pytest.approx(-0.5 - 1.25)
    assert float(hinge.d(real, fake)) == pytest.approx((0 + 0.5) / 2 + (0 + 1) / 2)
    assert float(hinge.g(fake)) == pytest.approx(0.5)
    assert losses.REGISTRY["wgan-gp"].critic and wgan.critic and not bce.critic and not hinge.critic


def test_every_loss_is_a_train_loss_value_with_its_params_section():
    import typing

    from pipeline.params import LossesParams, TrainParams

    assert typing.get_args(TrainParams.model_fields["loss"].annotation) == losses.NAMES
    assert set(LossesParams.model_fields) == {losses.section(name) for name in losses.NAMES}
