"""The project's own Keras layers and the inputs every generator and discriminator
starts from. Registered as serializable, so a saved generator loads wherever
this module has been imported (models.load_generator does)."""
from __future__ import annotations

from typing import NamedTuple

import keras
from keras import layers, ops

from pipeline.archs import DIGITS


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
    classes); the code lets it jump instead. With `groups` g, g such codes are
    read off g disjoint slices of z (z[:k], z[k:2k], ...), independent of one
    another: k ** g paths from g * k inputs, as Stacked MNIST's 1,000 modes
    are three independent digits."""

    def __init__(self, k: int, scale: float = 1.0, groups: int = 1, **kw):
        super().__init__(**kw)
        self.k, self.scale, self.groups = k, scale, groups

    def call(self, z):
        codes = [ops.one_hot(ops.argmax(z[:, g * self.k:(g + 1) * self.k], axis=-1), self.k, dtype=z.dtype)
                 for g in range(self.groups)]
        return ops.concatenate([z, *(code * self.scale for code in codes)], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] + self.k * self.groups)

    def get_config(self):
        return {**super().get_config(), "k": self.k, "scale": self.scale, "groups": self.groups}


@keras.saving.register_keras_serializable(package="mnist_gan")
class ChannelsToBatch(layers.Layer):
    """(n, c * d) -> (n * c, d): z's c slices as c rows, one per channel, so one network
    draws each channel from its own slice (BatchToChannels gathers them back)."""

    def __init__(self, c: int, **kw):
        super().__init__(**kw)
        self.c = c

    def call(self, z):
        return ops.reshape(z, (-1, z.shape[-1] // self.c))

    def compute_output_shape(self, input_shape):
        n, d = input_shape
        return (None if n is None else n * self.c, d // self.c)

    def get_config(self):
        return {**super().get_config(), "c": self.c}


@keras.saving.register_keras_serializable(package="mnist_gan")
class BatchToChannels(layers.Layer):
    """(n * c, h, w, 1) -> (n, h, w, c): each c consecutive one-channel images as the
    channels of one image, in ChannelsToBatch's order."""

    def __init__(self, c: int, **kw):
        super().__init__(**kw)
        self.c = c

    def call(self, x):
        _, h, w, _ = x.shape
        return ops.transpose(ops.reshape(x, (-1, self.c, h, w)), (0, 2, 3, 1))

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        return (None if n is None else n // self.c, h, w, self.c)

    def get_config(self):
        return {**super().get_config(), "c": self.c}


@keras.saving.register_keras_serializable(package="mnist_gan")
class ChannelsAsImages(layers.Layer):
    """(n, h, w, c) -> (c * n, h, w, 1): each channel of each image as an image of its own,
    channel by channel (channel 0 of every image first), so that packs of consecutive
    images (Pack) hold one channel of consecutive images."""

    def __init__(self, c: int, **kw):
        super().__init__(**kw)
        self.c = c

    def call(self, x):
        _, h, w, _ = x.shape
        return ops.reshape(ops.transpose(x, (3, 0, 1, 2)), (-1, h, w, 1))

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        return (None if n is None else n * self.c, h, w, 1)

    def get_config(self):
        return {**super().get_config(), "c": self.c}


@keras.saving.register_keras_serializable(package="mnist_gan")
class ChannelLogits(layers.Layer):
    """(c * m, 1) logits in ChannelsAsImages' order -> (m, c): each image's (or pack's)
    row holds its channels' logits, so that a loss, which averages over every logit,
    judges each channel as a sample of its own: the one-channel GAN's loss, over c times
    the batch, with an image's rows kept together (real and generated split by rows)."""

    def __init__(self, c: int, **kw):
        super().__init__(**kw)
        self.c = c

    def call(self, logits):
        return ops.transpose(ops.reshape(logits, (self.c, -1)))

    def compute_output_shape(self, input_shape):
        n, _ = input_shape
        return (None if n is None else n // self.c, self.c)

    def get_config(self):
        return {**super().get_config(), "c": self.c}


@keras.saving.register_keras_serializable(package="mnist_gan")
class DigitCode(layers.Layer):
    """[z, digit] -> [z, scale * one_hot(digit)]: what a conditional generator reads."""

    def __init__(self, scale: float = 1.0, **kw):
        super().__init__(**kw)
        self.scale = scale

    def call(self, inputs):
        z, digit = inputs
        return ops.concatenate([z, ops.one_hot(ops.cast(digit, "int32"), DIGITS, dtype=z.dtype) * self.scale], -1)

    def compute_output_shape(self, input_shape):
        z_shape, _ = input_shape
        return (*z_shape[:-1], z_shape[-1] + DIGITS)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


@keras.saving.register_keras_serializable(package="mnist_gan")
class DigitPlane(layers.Layer):
    """[images (n, h, w, c), digit (n,)] -> (n, h, w, c + 1): a learned plane per digit
    appended as a channel (concat conditioning in D)."""

    def build(self, input_shape):
        (_, h, w, _), _ = input_shape
        self.planes = self.add_weight(shape=(DIGITS, h, w, 1), initializer="random_normal", name="planes")

    def call(self, inputs):
        x, digit = inputs
        plane = ops.take(ops.cast(self.planes, x.dtype), ops.cast(digit, "int32"), axis=0)
        return ops.concatenate([x, plane], -1)

    def compute_output_shape(self, input_shape):
        (n, h, w, c), _ = input_shape
        return (n, h, w, c + 1)


@keras.saving.register_keras_serializable(package="mnist_gan")
class Projection(layers.Layer):
    """[features (n / m, f), digit (n,)] -> (n / m, 1): <embed(digits of the pack), features>,
    the projection discriminator's class term; one embedding row per (position, digit)
    of a pack of m (m = 1: Miyato and Koyama's embedding)."""

    def __init__(self, m: int = 1, **kw):
        super().__init__(**kw)
        self.m = m

    def build(self, input_shape):
        (_, f), _ = input_shape
        self.embedding = self.add_weight(shape=(self.m * DIGITS, f), initializer="glorot_uniform", name="embedding")

    def call(self, inputs):
        features, digit = inputs
        codes = ops.reshape(ops.one_hot(ops.cast(digit, "int32"), DIGITS, dtype=features.dtype), (-1, self.m * DIGITS))
        embedded = ops.matmul(codes, ops.cast(self.embedding, features.dtype))
        return ops.sum(embedded * features, axis=-1, keepdims=True)

    def compute_output_shape(self, input_shape):
        (n, _), _ = input_shape
        return (n, 1)

    def get_config(self):
        return {**super().get_config(), "m": self.m}


class CriticInput(NamedTuple):
    """A discriminator's Keras inputs (the image, or [image, digit]), what its first layer
    reads, and what its head needs to finish it (critic_head)."""
    inputs: object
    x: object
    digit: object
    condition: str
    pack: int


def image_input(channels: int = 1, pack: int = 1, condition: str = "none") -> CriticInput:
    """A discriminator's input (n, 28, 28, channels), with its digit (n,) when conditional,
    and what its first layer reads: the images, with their digit planes under concat,
    or packs of `pack` of them (train.pack)."""
    img = keras.Input((28, 28, channels), name="image")
    digit = keras.Input((), dtype="int32", name="digit") if condition != "none" else None
    x = DigitPlane()([img, digit]) if condition == "concat" else img
    x = Pack(pack)(x) if pack > 1 else x
    return CriticInput(img if digit is None else [img, digit], x, digit, condition, pack)


def critic_head(d: CriticInput, features, **dense) -> keras.Model:
    """The discriminator from its flat features: a float32 logit, plus the projection
    term under `condition: projection`. `dense`: the logit layer's initializers."""
    logit = layers.Dense(1, dtype="float32", **dense)(features)
    if d.condition == "projection":
        logit = layers.Add(dtype="float32")([logit, Projection(d.pack, dtype="float32")([features, d.digit])])
    return keras.Model(d.inputs, logit, name="discriminator")


class GeneratorInput(NamedTuple):
    """A generator's Keras inputs (z, or [z, digit]), what its first layer reads, and
    over how many channels it draws each one apart (generator_head finishes it)."""
    inputs: object
    x: object
    apart: int


def latent(z_dim: int, virtual_labels: int = 0, virtual_scale: float = 1.0, virtual_groups: int = 1,
           condition: str = "none", condition_scale: float = 1.0, apart: int = 1) -> GeneratorInput:
    """The generator's inputs (z, or [z, digit] when conditional) and what its first
    layer reads: z, with its virtual label (`train.virtual_labels`) and its digit's
    one-hot (`train.condition`) appended. `apart` c > 1 (`train.channel_draw:
    independent`): each of c channels is drawn by the same network from its own
    slice of z, so what the first layer reads is c slices per image
    (ChannelsToBatch), each with its own virtual codes."""
    if apart > 1 and condition != "none":
        raise ValueError("a generator that draws its channels apart takes no digit (condition: none)")
    z = keras.Input((z_dim,), name="z")
    x = ChannelsToBatch(apart)(z) if apart > 1 else z
    x = VirtualLabel(virtual_labels, virtual_scale, virtual_groups)(x) if virtual_labels else x
    if condition == "none":
        return GeneratorInput(z, x, apart)
    digit = keras.Input((), dtype="int32", name="digit")
    return GeneratorInput([z, digit], DigitCode(condition_scale)([x, digit]), apart)


def generator_head(g: GeneratorInput, x) -> keras.Model:
    """The generator from its last layer's output: tanh in float32 (images keep full
    range under mixed precision), its channels gathered back when drawn apart."""
    x = layers.Activation("tanh", dtype="float32")(x)
    return keras.Model(g.inputs, BatchToChannels(g.apart)(x) if g.apart > 1 else x, name="generator")
