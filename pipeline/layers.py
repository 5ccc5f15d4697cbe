"""The project's own Keras layers and the inputs every generator and discriminator
starts from. Registered as serializable, so a saved generator loads wherever
this module has been imported (models.load_generator does)."""
from __future__ import annotations

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="mnist_gan")
class Pack(layers.Layer):
    """(n, h, w, c) -> (n / m, h, w, m * c): each m consecutive images as one, concatenated
    along the channels (PacGAN's packing; n must be a multiple of m)."""

    def __init__(self, m: int, **kw):
        super().__init__(**kw)
        self.m = m

    def call(self, x):
        _, h, w, c = x.shape
        x = ops.reshape(x, (-1, self.m, h, w, c))
        return ops.reshape(ops.transpose(x, (0, 2, 3, 1, 4)), (-1, h, w, self.m * c))

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        return (None if n is None else n // self.m, h, w, c * self.m)

    def get_config(self):
        return {**super().get_config(), "m": self.m}


@keras.saving.register_keras_serializable(package="mnist_gan")
class VirtualLabel(layers.Layer):
    """z -> [z, scale * one_hot(argmax(z[:k]))]: a categorical code read off the
    Gaussian z itself (uniform over k, as the argmax of k i.i.d. normals is), so
    the generator gets k disconnected paths while its input stays z ~ N(0, I)
    (Shi et al. 2019, "virtual conditional GAN"). A generator of one connected
    latent space must draw images between its modes (digits between two
    classes); the code lets it jump instead."""

    def __init__(self, k: int, scale: float = 1.0, **kw):
        super().__init__(**kw)
        self.k, self.scale = k, scale

    def call(self, z):
        code = ops.one_hot(ops.argmax(z[:, :self.k], axis=-1), self.k, dtype=z.dtype)
        return ops.concatenate([z, code * self.scale], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] + self.k)

    def get_config(self):
        return {**super().get_config(), "k": self.k, "scale": self.scale}


def image_input(channels: int = 1, pack: int = 1):
    """A discriminator's input (n, 28, 28, channels) and what its first layer reads: the
    images, or packs of `pack` of them (train.pack)."""
    img = keras.Input((28, 28, channels), name="image")
    return img, (Pack(pack)(img) if pack > 1 else img)


def latent(z_dim: int, virtual_labels: int = 0, virtual_scale: float = 1.0):
    """The generator's input z and what its first layer reads: z, or z with its
    virtual label (`train.virtual_labels`)."""
    z = keras.Input((z_dim,), name="z")
    return z, (VirtualLabel(virtual_labels, virtual_scale)(z) if virtual_labels else z)
