"""GAN losses on discriminator logits / critic scores, the WGAN-GP penalty and R1.

`bce` is the seeds' non-saturating GAN loss; `wgan` (Arjovsky et al.) and
`wgan-gp` (Gulrajani et al.) are the cures seed 002 names for vanishing
gradients and mode collapse; `hinge` is the SN-GAN/BigGAN hinge loss.
"""
from __future__ import annotations

import tensorflow as tf

LOSSES = ("bce", "wgan", "wgan-gp", "hinge")


def _bce(labels_one: bool, logits):
    labels = tf.ones_like(logits) if labels_one else tf.zeros_like(logits)
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits))


def d_loss(kind: str, real, fake):
    if kind == "bce":
        return _bce(True, real) + _bce(False, fake)
    if kind in ("wgan", "wgan-gp"):
        return tf.reduce_mean(fake) - tf.reduce_mean(real)
    if kind == "hinge":
        return tf.reduce_mean(tf.nn.relu(1.0 - real)) + tf.reduce_mean(tf.nn.relu(1.0 + fake))
    raise ValueError(f"train.loss: unknown {kind!r}; allowed: {', '.join(LOSSES)}")


def g_loss(kind: str, fake):
    if kind == "bce":
        # Non-saturating: maximise log D(G(z)), strong gradients while D wins.
        return _bce(True, fake)
    if kind in ("wgan", "wgan-gp", "hinge"):
        return -tf.reduce_mean(fake)
    raise ValueError(f"train.loss: unknown {kind!r}; allowed: {', '.join(LOSSES)}")


def gradient_penalty(critic, real, fake, alpha):
    """mean((||grad_x critic(x_hat)||_2 - 1)^2) at x_hat = alpha * real + (1 - alpha) * fake,
    alpha of shape (n, 1, 1, 1), drawn U[0, 1] per sample by the caller."""
    x_hat = tf.convert_to_tensor(alpha * real + (1.0 - alpha) * fake)
    with tf.GradientTape() as tape:
        tape.watch(x_hat)
        scores = critic(x_hat, training=True)
    grads = tape.gradient(scores, x_hat)
    norms = tf.sqrt(tf.reduce_sum(tf.square(grads), axis=[1, 2, 3]) + 1e-12)
    return tf.reduce_mean(tf.square(norms - 1.0))


def r1_penalty(discriminator, real):
    """mean(||grad_x D(x)||_2^2) over real images x: the R1 penalty (Mescheder et al.
    2018), which the caller weighs by gamma / 2. Zero-centred on the data, it keeps D
    from growing steep where the real images are, with any loss."""
    real = tf.convert_to_tensor(real)
    with tf.GradientTape() as tape:
        tape.watch(real)
        scores = discriminator(real, training=True)
    grads = tape.gradient(scores, real)
    return tf.reduce_mean(tf.reduce_sum(tf.square(grads), axis=[1, 2, 3]))
