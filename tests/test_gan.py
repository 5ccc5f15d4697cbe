"""The GAN's train step: the discriminator's joint pass over real and fake
images is the same computation as two passes, and is used only where it is."""
from types import SimpleNamespace

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


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["bce", "wgan-gp"])
def test_g_steps_update_g_that_often_in_one_step_that_resumes_exactly(tmp_path, loss):
    """train.g_steps: 2 (PacGAN's code) makes two G updates after the loss's D updates, each
    on its own z, in one step: the step counter (noise key, history, checkpoints) counts
    it once, G's optimizer twice; a run resumed from its checkpoint is the one that never
    stopped."""
    from pipeline.checkpoint import TrainState

    x = np.random.default_rng(0).integers(0, 256, (64, 28, 28), dtype=np.uint8)
    p = train_params(arch="mlp", loss=loss, steps=6, batch_size=8, z_dim=8, ema=0.9, jit_compile=False,
                     virtual_labels=0, g_steps=2, standing_samples=64)
    straight = train.build(p)
    rows = train.fit(straight, p, x, verbose=0).rows
    assert [r["step"] for r in rows] == list(range(1, 7))
    n_critic = p.loss_params.n_critic
    assert (int(straight.step.numpy()), int(straight.g_optimizer.iterations.numpy()),
            int(straight.d_optimizer.iterations.numpy())) == (6, 12, 6 * n_critic)
    once = train.build(p.model_copy(update={"g_steps": 1}))
    train.fit(once, p.model_copy(update={"g_steps": 1}), x, verbose=0)
    assert int(once.g_optimizer.iterations.numpy()) == 6
    assert not all(np.array_equal(a, b) for a, b in zip(once.generator.get_weights(), straight.generator.get_weights()))

    first = train.build(p)
    state = TrainState(tmp_path, first, "f")
    train.fit(first, p.model_copy(update={"steps": 4}), x, state=state, verbose=0)
    state.save(4, [])
    resumed = train.build(p)
    start, _ = TrainState(tmp_path, resumed, "f").restore()
    rest = train.fit(resumed, p, x, start=start, verbose=0).rows
    assert start == 4 and [r["step"] for r in rest] == [5, 6]
    assert [(r["d_loss"], r["g_loss"]) for r in rest] == [(r["d_loss"], r["g_loss"]) for r in rows[4:]]
    assert all(np.array_equal(a, b) for a, b in zip(resumed.sampler.get_weights(), straight.sampler.get_weights()))


def test_the_noise_seeds_of_one_step_never_overlap():
    from pipeline import gan

    for n_critic in range(1, 21):  # params' bounds: n_critic <= 20, g_steps <= 8
        for g_steps in range(1, 9):
            used = [gan.critic_z(i) for i in range(n_critic)] + [gan.critic_alpha(i) for i in range(n_critic)] + \
                [gan.generator_z(j) for j in range(g_steps)]
            assert len(set(used)) == len(used) and 0 <= min(used) and max(used) < gan.NOISE_STRIDE
    too_many = SimpleNamespace(n_critic=29, clip=None, gp_weight=0.0, r1_weight=0.0)
    with pytest.raises(ValueError, match=r"2 \* n_critic \+ g_steps must be at most 64"):
        gan.GAN(None, None, z_dim=1, seed=0, loss="bce", settings=too_many, ema=0.0, g_steps=7)


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
    # Half the draws for the conv net: its passes are this test's cost, and its gap still
    # closes far beyond the bound; the MLP's closes less far, so it keeps the stage's count.
    samples = 4096 if arch == "mlp" else 2048
    settled = standing_statistics(g, seed=3, samples=samples, batch=1024)
    # The original is untouched, the copy differs only in its BatchNorm statistics.
    assert all(np.array_equal(a, b) for a, b in zip(before, g.get_weights()))
    z = np.random.default_rng(9).standard_normal((samples // 2, g.input_shape[-1])).astype("float32")
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
