"""The GAN's train step: the discriminator's joint pass over real and fake
images is the same computation as two passes, and is used only where it is."""
import numpy as np
import pytest

from defaults import train as train_params
from pipeline import distribution, params, train


def one_step(p: params.TrainParams, joint: bool, real: np.ndarray):
    gan = train.build(p)  # seeds keras from p.seed: identical initial weights
    gan.d_joint = joint
    out = gan.train_step(real)
    return {k: float(v) for k, v in out.items()}, gan.generator.get_weights() + gan.discriminator.get_weights()


@pytest.mark.parametrize("arch,loss", [("mlp", "hinge"), ("dcgan", "bce"), ("mlp", "wgan-gp")])
def test_joint_discriminator_pass_matches_two_passes(arch, loss):
    p = train_params(arch=arch, loss=loss, batch_size=8, ema=0.0, jit_compile=False)
    real = np.random.default_rng(1).uniform(-1, 1, (8, p.loss_params.n_critic, 28, 28, 1)).astype("float32")
    joint, w_joint = one_step(p, True, real)
    apart, w_apart = one_step(p, False, real)
    assert joint.keys() == apart.keys()
    for k in joint:
        assert joint[k] == pytest.approx(apart[k], rel=1e-4, abs=1e-5), k
    for a, b in zip(w_joint, w_apart):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    # The step changed the weights: the comparison above is not of two untouched models.
    assert not all(np.array_equal(a, b) for a, b in zip(w_joint, train.build(p).generator.get_weights()))


def test_joint_pass_only_without_batch_statistics_in_d():
    assert train.build(train_params(arch="mlp")).d_joint
    assert train.build(train_params(arch="dcgan")).d_joint
    bn = train_params(arch="dcgan_upsample", dcgan_upsample={"d_bn_momentum": 0.9})
    assert not train.build(bn).d_joint


@pytest.mark.slow
@pytest.mark.parametrize("arch, precision", [("mlp", "float32"), ("dcgan", "float32"), ("mlp", "bfloat16"),
                                             ("dcgan", "bfloat16")])
def test_standing_statistics_make_inference_match_batch_statistics(arch, precision):
    import keras

    from pipeline.gan import float32_copy, standing_statistics

    # The weight average in float32: what the stage saves, and frozen (trainable False).
    sampler = train.build(train_params(arch=arch, ema=0.999, jit_compile=False, precision=precision)).sampler
    g = float32_copy(sampler)
    assert {layer.dtype_policy.name for layer in sampler.layers} >= {"mixed_bfloat16" if precision == "bfloat16"
                                                                     else "float32"}
    assert {layer.dtype_policy.name for layer in g.layers} == {"float32"}
    assert all(np.array_equal(a, b) for a, b in zip(sampler.get_weights(), g.get_weights()))
    assert not g.trainable
    before = g.get_weights()
    settled = standing_statistics(g, seed=3, samples=4096, batch=1024)
    # The original is untouched, the copy differs only in its BatchNorm statistics.
    assert all(np.array_equal(a, b) for a, b in zip(before, g.get_weights()))
    z = np.random.default_rng(9).standard_normal((2048, g.input_shape[-1])).astype("float32")
    for layer in g.layers:  # for its batch statistics below
        layer.trainable = True
    gap_before = np.abs(g(z, training=False).numpy() - g(z, training=True).numpy()).mean()
    gap_after = np.abs(settled(z, training=False).numpy() - g(z, training=True).numpy()).mean()
    assert gap_after < gap_before / 10, (gap_before, gap_after)
    def learned(model):  # every weight but BatchNorm's moving mean and variance (its last two)
        return [w for layer in model.layers for w in
                (layer.get_weights()[:2] if isinstance(layer, keras.layers.BatchNormalization) else layer.get_weights())]

    n_bn = sum(isinstance(layer, keras.layers.BatchNormalization) for layer in g.layers)
    assert len(learned(g)) == len(learned(settled)) == len(g.weights) - 2 * n_bn > 0
    for a, b in zip(learned(g), learned(settled)):
        np.testing.assert_array_equal(a, b)
    assert [l.momentum for l in settled.layers if isinstance(l, keras.layers.BatchNormalization)] == \
        [l.momentum for l in g.layers if isinstance(l, keras.layers.BatchNormalization)]


def test_auto_precision_follows_the_cpu_flags():
    assert distribution.cpu_has_bf16("flags\t: fpu sse avx2 avx512f avx512_bf16 avx512_vnni\n")
    assert distribution.cpu_has_bf16("processor: 0\nflags\t: fpu avx2 amx_bf16 amx_tile\n")
    assert not distribution.cpu_has_bf16("flags\t: fpu sse avx2 fma\n")
    assert not distribution.cpu_has_bf16("")
    assert distribution.precision_for("float32") == "float32" and distribution.precision_for("bfloat16") == "bfloat16"
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):  # on a CPU, auto is what the flags say
        assert distribution.precision_for("auto") == ("bfloat16" if distribution.cpu_has_bf16() else "float32")


def test_build_leaves_the_global_dtype_policy_as_it_was():
    import keras

    gan = train.build(train_params(arch="mlp", precision="bfloat16", jit_compile=False))
    assert keras.config.dtype_policy().name == "float32"
    assert gan.generator.layers[1].dtype_policy.name == "mixed_bfloat16"
    assert gan.generator.layers[-1].dtype_policy.name == "float32"  # images and logits in full range
    assert gan.discriminator.layers[-1].dtype_policy.name == "float32"


def test_standing_statistics_leave_a_generator_without_batchnorm_as_is():
    import keras

    from pipeline.gan import standing_statistics

    g = keras.Sequential([keras.Input((4,)), keras.layers.Dense(784, activation="tanh"), keras.layers.Reshape((28, 28, 1))])
    assert standing_statistics(g, seed=0, samples=64) is g
