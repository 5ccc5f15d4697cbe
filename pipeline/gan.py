"""The GAN as one keras.Model: `train_step` updates D then G on one batch.

It computes and returns per-step losses and has no side effects; callbacks
log, sample and save.
"""
from __future__ import annotations

import keras
import tensorflow as tf


class GAN(keras.Model):
    def __init__(self, generator: keras.Model, discriminator: keras.Model, z_dim: int, seed: int):
        super().__init__()
        self.generator = generator
        self.discriminator = discriminator
        self.z_dim = z_dim
        # A seeded generator state variable: the same seed gives the same z
        # sequence, and it is saved and restored with the weights.
        self.noise = keras.random.SeedGenerator(seed)
        self.bce = keras.losses.BinaryCrossentropy(from_logits=True)

    def compile(self, d_optimizer: keras.optimizers.Optimizer, g_optimizer: keras.optimizers.Optimizer, **kw):
        super().compile(**kw)
        self.d_optimizer = d_optimizer
        self.g_optimizer = g_optimizer

    def call(self, z, training=False):
        return self.generator(z, training=training)

    def train_step(self, real):
        batch = tf.shape(real)[0]
        z = keras.random.normal((batch, self.z_dim), seed=self.noise)
        with tf.GradientTape() as tape:
            fake = self.generator(z, training=True)
            real_logits = self.discriminator(real, training=True)
            fake_logits = self.discriminator(fake, training=True)
            d_loss = (self.bce(tf.ones_like(real_logits), real_logits)
                      + self.bce(tf.zeros_like(fake_logits), fake_logits))
        grads = tape.gradient(d_loss, self.discriminator.trainable_weights)
        self.d_optimizer.apply_gradients(zip(grads, self.discriminator.trainable_weights))

        z = keras.random.normal((batch, self.z_dim), seed=self.noise)
        with tf.GradientTape() as tape:
            fake_logits = self.discriminator(self.generator(z, training=True), training=True)
            # Non-saturating loss: G maximises log D(G(z)) (strong gradients early on).
            g_loss = self.bce(tf.ones_like(fake_logits), fake_logits)
        grads = tape.gradient(g_loss, self.generator.trainable_weights)
        self.g_optimizer.apply_gradients(zip(grads, self.generator.trainable_weights))
        # Raw per-step values rather than running means: the loss history is per step.
        return {"d_loss": d_loss, "g_loss": g_loss}
