"""The GAN as one keras.Model: `train_step` runs n_critic D updates, then g_steps G updates.

It computes and returns per-step losses and diagnostics and has no side
effects; callbacks log, sample and checkpoint. Randomness is stateless,
keyed on (seed, step), so a run restored from a checkpoint draws the same
z and alpha as one that never stopped. Under a tf.distribute strategy the
batch is the global batch: each replica takes its rows of one draw for the
whole batch, so the noise (like the images, see train.dataset) is the same
however many replicas, on however many workers, share the batch.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from pipeline import losses
from pipeline.archs import DIGITS
from pipeline.models import digit_input, inputs_for, z_dim_of


# The stateless noise's seeds: each step owns NOISE_STRIDE consecutive seeds, one per
# draw it makes (critic update i draws z and alpha from the first ones, generator update j
# draws z from the last ones down). They cannot overlap while 2 * n_critic + g_steps <=
# NOISE_STRIDE; GAN checks it (params' bounds keep well inside it).
NOISE_STRIDE = 64


def critic_z(i: int) -> int:
    return 2 * i


def critic_alpha(i: int) -> int:
    return 2 * i + 1


def generator_z(j: int) -> int:
    return NOISE_STRIDE - 1 - j


class GAN(keras.Model):
    def __init__(self, generator: keras.Model, discriminator: keras.Model, *, z_dim: int, seed: int, loss: str,
                 settings, ema: float, g_steps: int = 1):
        """`loss`: a name in losses.REGISTRY; `settings`: its params.LossParams (n_critic,
        clip, gp_weight, r1_weight), applied as they are; `ema`: the weight average's decay;
        `g_steps`: G updates per step (PacGAN's code takes 2)."""
        super().__init__()
        if 2 * settings.n_critic + g_steps > NOISE_STRIDE:
            raise ValueError(f"n_critic={settings.n_critic}, g_steps={g_steps}: 2 * n_critic + g_steps must be at "
                             f"most {NOISE_STRIDE} (the step's noise seeds)")
        self.g_steps = g_steps
        # The step counter: the noise's key, the callbacks' step and the checkpoints' number.
        # G's optimizer counts its own updates, g_steps a step.
        self.step = self.add_weight(shape=(), dtype="int64", initializer="zeros", trainable=False,
                                    aggregation="only_first_replica", name="step")
        self.generator = generator
        # An exponential moving average of G's weights (Yazici et al. 2019): what the
        # samples, the saved model and the export use when `ema` > 0. Training never reads it.
        self.ema = ema
        self.ema_generator = None
        if ema:
            self.ema_generator = keras.models.clone_model(generator)
            self.ema_generator.set_weights(generator.get_weights())
            self.ema_generator.trainable = False
        self.discriminator = discriminator
        # A conditional G takes (z, digit) and D judges (image, digit) pairs (train.condition).
        self.conditional = len(generator.inputs) == 2
        self.z_dim = z_dim
        self.noise_seed = seed
        self.gan_loss = losses.REGISTRY[loss]
        self.n_critic = settings.n_critic
        self.clip = settings.clip
        self.gp_weight = settings.gp_weight
        self.r1_weight = settings.r1_weight
        # Without batch statistics in D, one pass over real and fake together is
        # the same function as two passes, and one matmul of 2n rows beats two of n.
        self.d_joint = not any(isinstance(layer, keras.layers.BatchNormalization) for layer in discriminator.layers)
        self.built = True  # both sub-models are built; fit() must not call the GAN on images

    def compile(self, d_optimizer: keras.optimizers.Optimizer, g_optimizer: keras.optimizers.Optimizer, **kw):
        super().compile(**kw)
        self.d_optimizer = d_optimizer
        self.g_optimizer = g_optimizer
        # Slot variables made now, in the strategy's scope, not lazily inside the
        # compiled step (where MirroredStrategy cannot create them).
        d_optimizer.build(self.discriminator.trainable_variables)
        g_optimizer.build(self.generator.trainable_variables)

    @property
    def sampler(self) -> keras.Model:
        """The generator that samples: the moving average where there is one."""
        return self.ema_generator or self.generator

    def call(self, inputs, training=False):
        return self.sampler(inputs, training=False)

    def _update_ema(self):
        # Warm-up as tf.train.ExponentialMovingAverage's num_updates: the average
        # forgets the random initial weights within the first hundred steps.
        t = tf.cast(self.g_optimizer.iterations, tf.float32)
        decay = tf.minimum(self.ema, (1.0 + t) / (10.0 + t))
        for avg, w in zip(self.ema_generator.weights, self.generator.weights):
            avg.assign(decay * avg + (1.0 - decay) * tf.cast(w, avg.dtype))

    def _seed(self, purpose: int):
        step = tf.cast(self.step, tf.int32)
        return tf.stack([tf.constant(self.noise_seed, tf.int32), step * NOISE_STRIDE + purpose])

    def _share(self, draw, n, purpose: int):
        # This replica's n rows of one draw for the global batch (a single device
        # takes all of it): the noise does not depend on the replica count.
        ctx = tf.distribute.get_replica_context()
        first = tf.cast(ctx.replica_id_in_sync_group, tf.int32) * n
        return draw(n * ctx.num_replicas_in_sync, self._seed(purpose))[first:first + n]

    def _z(self, n, purpose: int):
        return self._share(lambda rows, seed: tf.random.stateless_normal((rows, self.z_dim), seed=seed), n, purpose)

    def _digits(self, n, purpose: int):
        """The digits G is asked for beside the z of the same purpose: class-balanced (a
        seeded permutation of 0, 1, ..., 9, 0, 1, ... over the global batch) and keyed on
        (seed, step) as z is, from a stream folded off z's seed."""
        def draw(rows, seed):
            order = tf.argsort(tf.random.stateless_uniform((rows,), seed=tf.random.experimental.stateless_fold_in(
                seed, 1)))
            return tf.cast(order % DIGITS, tf.int32)
        return self._share(draw, n, purpose)

    def _fake(self, n, purpose: int):
        """n generated images and the digits they were asked for (None: unconditional)."""
        z = self._z(n, purpose)
        if not self.conditional:
            return self.generator(z, training=True), None
        digits = self._digits(n, purpose)
        return self.generator([z, digits], training=True), digits

    def _critic(self, digits):
        """D as a function of the images alone, judging them with `digits` when conditional."""
        if digits is None:
            return self.discriminator
        return lambda x, training=True: self.discriminator([x, digits], training=training)

    def train_step(self, data):
        # real is (batch, n_critic, 28, 28, c): column i feeds critic update i; a conditional
        # GAN also gets the real images' digits (batch, n_critic).
        real, real_digits = data if self.conditional else (data, None)
        batch = tf.shape(real)[0]
        # Replicas' gradients are summed, so each differentiates its loss over the
        # replica count (as keras does for compiled losses); 1 outside a strategy.
        scale = 1.0 / tf.distribute.get_strategy().num_replicas_in_sync
        d_vars, g_vars = self.discriminator.trainable_weights, self.generator.trainable_weights
        for i in range(self.n_critic):
            x = real[:, i]
            x_digits = None if real_digits is None else real_digits[:, i]
            with tf.GradientTape() as tape:
                fake, fake_digits = self._fake(batch, critic_z(i))
                if self.d_joint:
                    both_digits = None if x_digits is None else tf.concat([x_digits, fake_digits], 0)
                    both = self._critic(both_digits)(tf.concat([x, fake], 0), training=True)
                    half = tf.shape(both)[0] // 2  # batch, or batch / train.pack packs
                    real_out, fake_out = both[:half], both[half:]
                else:
                    real_out = self._critic(x_digits)(x, training=True)
                    fake_out = self._critic(fake_digits)(fake, training=True)
                d_loss = self.gan_loss.d(real_out, fake_out)
                if self.gp_weight:
                    alpha = self._share(lambda rows, seed: tf.random.stateless_uniform((rows, 1, 1, 1), seed=seed),
                                        batch, critic_alpha(i))
                    # Between a real image and a generated one, judged as the real one's digit.
                    penalty = losses.gradient_penalty(self._critic(x_digits), x, fake, alpha)
                    d_loss += self.gp_weight * penalty
                if self.r1_weight:
                    d_loss += 0.5 * self.r1_weight * losses.r1_penalty(self._critic(x_digits), x)
                scaled = d_loss * scale
            d_grads = tape.gradient(scaled, d_vars)
            self.d_optimizer.apply_gradients(zip(d_grads, d_vars))
            if self.clip:
                for v in d_vars:
                    v.assign(tf.clip_by_value(v, -self.clip, self.clip))

        for j in range(self.g_steps):  # the last update's loss and gradients are reported
            with tf.GradientTape() as tape:
                fake_g, fake_g_digits = self._fake(batch, generator_z(j))
                fake_out_g = self._critic(fake_g_digits)(fake_g, training=True)
                g_loss = self.gan_loss.g(fake_out_g)
                scaled = g_loss * scale
            g_grads = tape.gradient(scaled, g_vars)
            self.g_optimizer.apply_gradients(zip(g_grads, g_vars))
            if self.ema_generator is not None:
                self._update_ema()
        self.step.assign_add(1)

        out = {"d_loss": d_loss, "g_loss": g_loss,
               "d_grad_norm": tf.linalg.global_norm(d_grads) / scale,
               "g_grad_norm": tf.linalg.global_norm(g_grads) / scale}
        if self.gp_weight:
            out["gradient_penalty"] = penalty
        if self.gan_loss.critic:
            # The critic's estimate of the Wasserstein distance (up to a constant).
            out["w_estimate"] = tf.reduce_mean(real_out) - tf.reduce_mean(fake_out)
        else:
            out["d_acc_real"] = tf.reduce_mean(tf.cast(real_out > 0, tf.float32))
            out["d_acc_fake"] = tf.reduce_mean(tf.cast(fake_out < 0, tf.float32))
        # Raw per-step values rather than running means: the history is per step. Keras
        # averages them over the replicas; across workers it reduces along axis 0, which a
        # scalar lacks (tensorflow/tensorflow#72388), so there each gets one.
        strategy = tf.distribute.get_strategy()
        if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and strategy.extended._in_multi_worker_mode():
            out = {k: v[None] for k, v in out.items()}
        return out


def float32_copy(model: keras.Model) -> keras.Model:
    """`model` computing in float32: what a mixed-precision run saves and serves
    (its weights are float32 already); a float32 model comes back as it is."""
    if all(layer.dtype_policy.name == "float32" for layer in model.layers):
        return model

    def clone(layer):
        return layer.__class__.from_config({**layer.get_config(), "dtype": "float32"})

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    copy.trainable = model.trainable
    return copy


def standing_statistics(generator: keras.Model, seed: int, samples: int, batch: int = 512) -> keras.Model:
    """A copy of `generator` whose BatchNormalization moving statistics are the
    mean of its own batch statistics over `samples` draws of z (BigGAN's
    "standing statistics"); `generator` itself is left as it is.

    Training keeps moving statistics with momentum over the last few batches of
    a generator that changed at every one of them, and the moving average of the
    weights averages those statistics along with the weights, so neither matches
    the weights that sample. Recomputed for the final weights, inference-mode
    samples are what training-mode batches would give."""
    def batch_norms(model):
        return [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]

    if not batch_norms(generator):
        return generator
    settled = keras.models.clone_model(generator)
    settled.set_weights(generator.get_weights())
    norms = batch_norms(settled)
    momenta = [layer.momentum for layer in norms]
    for layer in norms:  # a frozen BatchNormalization layer keeps its statistics even in training mode
        layer.trainable = True
    rng = np.random.default_rng(seed)
    z_dim = z_dim_of(generator)
    batch = min(batch, samples)
    # A conditional generator's statistics over every digit alike, as the samples ask for them.
    digits = np.arange(batch, dtype=np.int32) % DIGITS if digit_input(generator) is not None else None
    for k in range(samples // batch):
        for layer in norms:  # a cumulative mean: batch k weighs 1/(k+1)
            layer.momentum = k / (k + 1.0)
        settled(inputs_for(generator, rng.standard_normal((batch, z_dim)).astype(np.float32), digits), training=True)
    for layer, m in zip(norms, momenta):
        layer.momentum = m
    settled.trainable = False
    return settled
