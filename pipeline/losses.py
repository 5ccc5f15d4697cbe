"""The registry of GAN losses, on discriminator logits or critic scores, and the
gradient penalties any of them can add.

`bce` is the seeds' non-saturating GAN loss; `wgan` (Arjovsky et al.) and
`wgan-gp` (Gulrajani et al.) are the cures seed 002 names for vanishing
gradients and mode collapse (the two differ only in their params: clipping, or
the gradient penalty); `hinge` is the SN-GAN/BigGAN hinge loss.

A name here is a `train.loss` value and a `train.losses.<name>` section of
params.yaml (`-` written `_`), which holds its n_critic, clipping, penalties and
optimizer. Adding a loss is one `REGISTRY` entry here, its section in
params.yaml, and its test. TensorFlow is imported inside the functions, so that
validating params does not load it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


def _bce(labels_one: bool, logits):
    import tensorflow as tf

    labels = tf.ones_like(logits) if labels_one else tf.zeros_like(logits)
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits))


def bce_d(real, fake):
    return _bce(True, real) + _bce(False, fake)


def bce_g(fake):
    # Non-saturating: maximise log D(G(z)), strong gradients while D wins.
    return _bce(True, fake)


def wasserstein_d(real, fake):
    import tensorflow as tf

    return tf.reduce_mean(fake) - tf.reduce_mean(real)


def score_g(fake):
    """-mean(D(G(z))): the generator's loss wherever D outputs a score to raise."""
    import tensorflow as tf

    return -tf.reduce_mean(fake)


def hinge_d(real, fake):
    import tensorflow as tf

    return tf.reduce_mean(tf.nn.relu(1.0 - real)) + tf.reduce_mean(tf.nn.relu(1.0 + fake))


@dataclass(frozen=True)
class Loss:
    d: Callable   # (D's outputs on real, on generated) -> D's loss
    g: Callable   # (D's outputs on generated) -> G's loss
    # A critic's outputs are scores, not logits: the step reports its Wasserstein
    # estimate instead of D's accuracy.
    critic: bool


REGISTRY: dict[str, Loss] = {
    "bce": Loss(bce_d, bce_g, critic=False),
    "wgan": Loss(wasserstein_d, score_g, critic=True),
    "wgan-gp": Loss(wasserstein_d, score_g, critic=True),
    "hinge": Loss(hinge_d, score_g, critic=False),
}
NAMES = tuple(REGISTRY)


def section(name: str) -> str:
    """The loss's key under `train.losses` (a YAML key and a Python name: no `-`)."""
    return name.replace("-", "_")


def gradient_penalty(critic, real, fake, alpha):
    """mean((||grad_x critic(x_hat)||_2 - 1)^2) at x_hat = alpha * real + (1 - alpha) * fake,
    alpha of shape (n, 1, 1, 1), drawn U[0, 1] per sample by the caller."""
    import tensorflow as tf

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
    import tensorflow as tf

    real = tf.convert_to_tensor(real)
    with tf.GradientTape() as tape:
        tape.watch(real)
        scores = discriminator(real, training=True)
    grads = tape.gradient(scores, real)
    return tf.reduce_mean(tf.reduce_sum(tf.square(grads), axis=[1, 2, 3]))


if __name__ == "__main__":  # the names, one a line (`make grid`'s default list)
    print("\n".join(NAMES))
