"""The registry of architectures: each name's params section and its generator and
discriminator builders, the one list every other place derives from.

A name here is a `train.arch` (and `train.d_arch`) value and a `train.<name>`
section of params.yaml, where its numbers live (the seeds' values; recipes
hold other sets). Adding an architecture is one params class, two builders and
one `REGISTRY` entry here, its section in params.yaml, and its test.

Builders take (z_dim or nothing, the arch's params, channels, ...) and return
Keras models. Discriminators output logits; the losses apply the sigmoid where
they need one (numerically stable, and equivalent to the seeds' sigmoid +
binary cross-entropy). The last layer of each network computes in float32
whatever the precision policy (Keras' advice for mixed precision: images and
logits keep full range), a no-op in a float32 run. Keras is imported inside
the builders, so that validating params does not load TensorFlow.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Callable, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

Units = list[Annotated[int, Field(ge=1)]]
Rate = Annotated[float, Field(ge=0, lt=1)]
IMAGE_SIZE = 28


class Section(BaseModel):
    """A params section: every key required (params.yaml holds the values), none extra."""
    model_config = ConfigDict(extra="forbid", frozen=True)


class OptimizerParams(Section):
    name: Literal["adam", "rmsprop"]
    d_lr: float = Field(gt=0, lt=1)
    g_lr: float = Field(gt=0, lt=1)
    beta_1: Rate   # adam only
    beta_2: Rate   # adam only


class ArchParams(Section):
    """What every arch section holds besides its layers: the optimizer it trains with
    unless the loss names its own (`train.losses.<loss>.optimizer`)."""
    optimizer: OptimizerParams


def _upscales_to_28(name: str, start: int, factors: list[int]) -> None:
    size = start * int(np.prod(factors))
    if size != IMAGE_SIZE:
        raise ValueError(f"{name}: the generator upscales to {size}x{size}, expected {IMAGE_SIZE}x{IMAGE_SIZE}")


def _ends_with_one_channel(name: str, filters: list[int]) -> None:
    if filters[-1] != 1:
        raise ValueError(f"{name}.g_filters must end with 1 (the image's channel; a dataset of more "
                         "channels, prepare.dataset: stacked, widens it)")


# --- mlp: seed 004 -----------------------------------------------------------------

class MLPArch(ArchParams):
    g_units: Units
    g_bn_momentum: Rate
    d_units: Units
    d_dropout: Rate   # after each of D's hidden layers (0: none)
    leaky_slope: Rate


def mlp_generator(z_dim: int, a: MLPArch, channels: int = 1, **code):
    """Seed 004: Dense blocks (128-256-512-1024), each LeakyReLU + BatchNorm(0.8), then Dense(784, tanh)."""
    from keras import layers

    from pipeline.layers import generator_head, latent

    g = latent(z_dim, **code)
    x = g.x
    for units in a.g_units:
        x = layers.Dense(units)(x)
        x = layers.LeakyReLU(a.leaky_slope)(x)
        x = layers.BatchNormalization(momentum=a.g_bn_momentum)(x)
    x = layers.Reshape((28, 28, channels))(layers.Dense(28 * 28 * channels)(x))
    return generator_head(g, x)


def mlp_discriminator(a: MLPArch, channels: int = 1, pack: int = 1, condition: str = "none"):
    """Seed 004: Flatten, Dense(784), LeakyReLU(0.2), Dense(392), LeakyReLU(0.2), Dense(1);
    optionally Dropout after each LeakyReLU."""
    from keras import layers

    from pipeline.layers import critic_head, image_input

    d = image_input(channels, pack, condition)
    x = d.x
    x = layers.Flatten()(x)
    for units in a.d_units:
        x = layers.LeakyReLU(a.leaky_slope)(layers.Dense(units)(x))
        if a.d_dropout:
            x = layers.Dropout(a.d_dropout)(x)
    return critic_head(d, x)


# --- dcgan: seed 001 (Atienza) ---------------------------------------------------

class DCGANArch(ArchParams):
    g_filters: Units
    g_strides: list[Literal[1, 2]]
    d_filters: Units
    d_strides: list[Literal[1, 2]]
    kernel_size: int = Field(ge=1, le=9)
    leaky_slope: Rate

    @model_validator(mode="after")
    def _layers_agree(self):
        if len(self.g_filters) != len(self.g_strides) or len(self.d_filters) != len(self.d_strides):
            raise ValueError("dcgan: g_filters/g_strides and d_filters/d_strides must have equal lengths")
        _ends_with_one_channel("dcgan", self.g_filters)
        _upscales_to_28("dcgan", 7, self.g_strides)
        return self


def dcgan_generator(z_dim: int, a: DCGANArch, channels: int = 1, **code):
    """Seed 001 (Atienza): Dense to 7x7x128, then BatchNorm-ReLU-Conv2DTranspose
    blocks (filters 128/64/32/1, kernel 5, strides 2/2/1/1); tanh for [-1, 1]."""
    from keras import layers

    from pipeline.layers import generator_head, latent

    g = latent(z_dim, **code)
    x = layers.Dense(7 * 7 * a.g_filters[0])(g.x)
    x = layers.Reshape((7, 7, a.g_filters[0]))(x)
    for filters, strides in zip([*a.g_filters[:-1], channels], a.g_strides):
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
        x = layers.Conv2DTranspose(filters, a.kernel_size, strides=strides, padding="same")(x)
    return generator_head(g, x)


def dcgan_discriminator(a: DCGANArch, channels: int = 1, pack: int = 1, condition: str = "none"):
    """Seed 001: LeakyReLU-Conv2D blocks (filters 32/64/128/256, kernel 5, strides
    2/2/2/1), Flatten, Dense(1): 1,080,577 parameters on 28x28x1."""
    from keras import layers

    from pipeline.layers import critic_head, image_input

    d = image_input(channels, pack, condition)
    x = d.x
    for filters, strides in zip(a.d_filters, a.d_strides):
        x = layers.LeakyReLU(a.leaky_slope)(x)
        x = layers.Conv2D(filters, a.kernel_size, strides=strides, padding="same")(x)
    x = layers.Flatten()(x)
    return critic_head(d, x)


# --- dcgan_upsample: seeds 000/002 (Foster) ----------------------------------------

class DCGANUpsampleArch(ArchParams):
    upscale: Literal["upsample", "transpose"]
    g_dense_shape: Units
    g_bn_momentum: Rate
    g_upsample: list[Literal[1, 2]]
    g_filters: Units
    d_filters: Units
    d_strides: list[Literal[1, 2]]
    d_bn_momentum: Rate | None
    d_dropout: Rate
    kernel_size: int = Field(ge=1, le=9)
    activation: Literal["relu", "leaky_relu"]
    init_stddev: float = Field(gt=0)

    @model_validator(mode="after")
    def _layers_agree(self):
        if len(self.g_filters) != len(self.g_upsample) or len(self.d_filters) != len(self.d_strides):
            raise ValueError("dcgan_upsample: g_filters/g_upsample and d_filters/d_strides must have equal lengths")
        _ends_with_one_channel("dcgan_upsample", self.g_filters)
        if len(self.g_dense_shape) != 3 or self.g_dense_shape[0] != self.g_dense_shape[1]:
            raise ValueError(f"dcgan_upsample.g_dense_shape must be [side, side, filters], got {self.g_dense_shape}")
        _upscales_to_28("dcgan_upsample", self.g_dense_shape[0], self.g_upsample)
        return self


def _activation(name: str):
    from keras import layers

    return layers.LeakyReLU(0.2) if name == "leaky_relu" else layers.Activation(name)


def upsample_generator(z_dim: int, a: DCGANUpsampleArch, channels: int = 1, **code):
    """Seeds 000/002 (Foster): Dense(7*7*64), BatchNorm, ReLU, Reshape(7,7,64), then per
    layer UpSampling2D (factor 2) + Conv2D, or one Conv2DTranspose with that stride
    (`upscale: transpose`, seed 002's comparison); BatchNorm + ReLU between, tanh last."""
    import keras
    from keras import layers

    from pipeline.layers import generator_head, latent

    init = keras.initializers.RandomNormal(stddev=a.init_stddev)
    g = latent(z_dim, **code)
    x = layers.Dense(int(np.prod(a.g_dense_shape)), kernel_initializer=init)(g.x)
    x = layers.BatchNormalization(momentum=a.g_bn_momentum)(x)
    x = _activation(a.activation)(x)
    x = layers.Reshape(tuple(a.g_dense_shape))(x)
    last = len(a.g_filters) - 1
    for i, (filters, factor) in enumerate(zip([*a.g_filters[:-1], channels], a.g_upsample)):
        if a.upscale == "upsample":
            if factor == 2:
                x = layers.UpSampling2D()(x)
            x = layers.Conv2D(filters, a.kernel_size, padding="same", kernel_initializer=init,
                              name=f"generator_conv_{i}")(x)
        else:
            x = layers.Conv2DTranspose(filters, a.kernel_size, strides=factor, padding="same",
                                       kernel_initializer=init, name=f"generator_conv_{i}")(x)
        if i < last:
            x = layers.BatchNormalization(momentum=a.g_bn_momentum)(x)
            x = _activation(a.activation)(x)
    return generator_head(g, x)


def upsample_discriminator(a: DCGANUpsampleArch, channels: int = 1, pack: int = 1, condition: str = "none"):
    """Seeds 000/002: Conv2D (filters 64/64/128/128, kernel 5, strides 2/2/2/1), optional
    BatchNorm after the first, activation, Dropout(0.4); Flatten, Dense(1)."""
    import keras
    from keras import layers

    from pipeline.layers import critic_head, image_input

    init = keras.initializers.RandomNormal(stddev=a.init_stddev)
    d = image_input(channels, pack, condition)
    x = d.x
    for i, (filters, strides) in enumerate(zip(a.d_filters, a.d_strides)):
        x = layers.Conv2D(filters, a.kernel_size, strides=strides, padding="same", kernel_initializer=init,
                          name=f"discriminator_conv_{i}")(x)
        if a.d_bn_momentum and i > 0:
            x = layers.BatchNormalization(momentum=a.d_bn_momentum)(x)
        x = _activation(a.activation)(x)
        if a.d_dropout:
            x = layers.Dropout(a.d_dropout)(x)
    x = layers.Flatten()(x)
    return critic_head(d, x, kernel_initializer=init)


# --- dcgan_paper: VEEGAN's and PacGAN's Stacked MNIST DCGAN -------------------------

class DCGANPaperArch(ArchParams):
    """Radford et al.'s layout at 28x28: Dense to 2x2 x 8*gf, Conv2DTranspose blocks
    (4*gf, 2*gf, gf, channels; kernel 5, stride 2; 4x4 cropped to TensorFlow's 7x7 where
    8x8 would overshoot) with BatchNorm and ReLU, tanh; D: Conv2D blocks (df, 2*df, 4*df,
    8*df; kernel 5, stride 2), BatchNorm after the first, LeakyReLU 0.2, Dense(1)."""
    gf: int = Field(ge=1, le=1024)
    df: int = Field(ge=1, le=1024)
    kernel_size: int = Field(ge=1, le=9)
    bn_momentum: Rate
    leaky_slope: Rate


def paper_generator(z_dim: int, a: DCGANPaperArch, channels: int = 1, **code):
    """2x2 -> 4x4 -> 7x7 -> 14x14 -> 28x28, as TensorFlow's conv2d_transpose with an
    output shape of 7 computes it from 4 (Keras' 8, less its first row and column)."""
    import keras
    from keras import layers

    from pipeline.layers import generator_head, latent

    init = keras.initializers.RandomNormal(stddev=0.02)
    g = latent(z_dim, **code)
    x = layers.Reshape((2, 2, 8 * a.gf))(layers.Dense(2 * 2 * 8 * a.gf)(g.x))
    for i, filters in enumerate((4 * a.gf, 2 * a.gf, a.gf, channels)):
        x = layers.ReLU()(layers.BatchNormalization(momentum=a.bn_momentum, epsilon=1e-5)(x))
        x = layers.Conv2DTranspose(filters, a.kernel_size, strides=2, padding="same", kernel_initializer=init)(x)
        if i == 1:
            x = layers.Cropping2D(((1, 0), (1, 0)))(x)
    return generator_head(g, x)


def paper_discriminator(a: DCGANPaperArch, channels: int = 1, pack: int = 1, condition: str = "none"):
    """Conv2D (df, 2df, 4df, 8df; kernel 5, stride 2), BatchNorm after the first,
    LeakyReLU; Flatten, Dense(1)."""
    import keras
    from keras import layers

    from pipeline.layers import critic_head, image_input

    init = keras.initializers.RandomNormal(stddev=0.02)
    d = image_input(channels, pack, condition)
    x = d.x
    for i, filters in enumerate((a.df, 2 * a.df, 4 * a.df, 8 * a.df)):
        x = layers.Conv2D(filters, a.kernel_size, strides=2, padding="same", kernel_initializer=init)(x)
        if i:
            x = layers.BatchNormalization(momentum=a.bn_momentum, epsilon=1e-5)(x)
        x = layers.LeakyReLU(a.leaky_slope)(x)
    x = layers.Flatten()(x)
    return critic_head(d, x)


# How every arch's networks take the digit it draws or judges (`train.condition`):
# - none: it does not (a generator of z alone);
# - concat: G reads z with the digit's one-hot appended (Mirza and Osindero 2014); D reads
#   the image with a learned 28x28 plane of the digit as one more channel (keras-io's
#   conditional GAN gives D ten constant planes; one learned plane is the same
#   information at a tenth of the width);
# - projection: G as concat; D adds <embed(digit), features> to its logit (Miyato and
#   Koyama 2018).
# Under train.pack, D judges m (image, digit) pairs at once: each image packs with its own
# plane (concat), or the m digits' joint embedding projects the pack's features.
CONDITIONS = ("none", "concat", "projection")
DIGITS = 10  # the classes a conditional network takes: the digits 0-9


@dataclass(frozen=True)
class Arch:
    params: type[ArchParams]     # its `train.<name>` section
    generator: Callable          # (z_dim, params, channels, **layers.latent's codes and apart) -> keras.Model
    discriminator: Callable      # (params, channels, pack, condition) -> keras.Model
    origin: str                  # where it comes from (the docs list it)


REGISTRY: dict[str, Arch] = {
    "mlp": Arch(MLPArch, mlp_generator, mlp_discriminator, "seed 004"),
    "dcgan": Arch(DCGANArch, dcgan_generator, dcgan_discriminator, "seed 001 (Atienza)"),
    "dcgan_upsample": Arch(DCGANUpsampleArch, upsample_generator, upsample_discriminator, "seeds 000/002 (Foster)"),
    "dcgan_paper": Arch(DCGANPaperArch, paper_generator, paper_discriminator, "VEEGAN's and PacGAN's DCGAN"),
}
NAMES = tuple(REGISTRY)


if __name__ == "__main__":  # the names, one a line (`make grid`'s default list)
    print("\n".join(NAMES))
