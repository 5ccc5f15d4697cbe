"""Generator and discriminator builders for the seeds' architectures.

    python -m pipeline.models --arch dcgan      # the seeds' summary(): layers and parameter counts

Discriminators output logits; the losses apply the sigmoid (numerically
stable, and equivalent to the seeds' sigmoid + binary cross-entropy).
"""
from __future__ import annotations

import argparse

import keras
from keras import layers

IMAGE_SHAPE = (28, 28, 1)
ARCHS = ("mlp", "dcgan")


def mlp_generator(z_dim: int) -> keras.Model:
    """Seed 004: Dense 128-256-512-1024, each LeakyReLU(0.2) + BatchNorm(0.8), then Dense(784, tanh)."""
    z = keras.Input((z_dim,), name="z")
    x = z
    for units in (128, 256, 512, 1024):
        x = layers.Dense(units)(x)
        x = layers.LeakyReLU(0.2)(x)
        x = layers.BatchNormalization(momentum=0.8)(x)
    x = layers.Dense(28 * 28, activation="tanh")(x)
    return keras.Model(z, layers.Reshape(IMAGE_SHAPE)(x), name="generator")


def mlp_discriminator() -> keras.Model:
    """Seed 004: Flatten, Dense(784), LeakyReLU(0.2), Dense(392), LeakyReLU(0.2), Dense(1)."""
    img = keras.Input(IMAGE_SHAPE, name="image")
    x = layers.Flatten()(img)
    x = layers.LeakyReLU(0.2)(layers.Dense(784)(x))
    x = layers.LeakyReLU(0.2)(layers.Dense(392)(x))
    return keras.Model(img, layers.Dense(1)(x), name="discriminator")


def dcgan_generator(z_dim: int) -> keras.Model:
    """Seed 001 (Atienza): Dense to 7x7x128, then BatchNorm-ReLU-Conv2DTranspose
    blocks with filters 128/64/32/1, kernel 5, strides 2/2/1/1; tanh for [-1, 1]."""
    z = keras.Input((z_dim,), name="z")
    x = layers.Dense(7 * 7 * 128)(z)
    x = layers.Reshape((7, 7, 128))(x)
    for filters, strides in ((128, 2), (64, 2), (32, 1), (1, 1)):
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
        x = layers.Conv2DTranspose(filters, 5, strides=strides, padding="same")(x)
    return keras.Model(z, layers.Activation("tanh")(x), name="generator")


def dcgan_discriminator() -> keras.Model:
    """Seed 001: LeakyReLU-Conv2D blocks, filters 32/64/128/256, kernel 5, strides
    2/2/2/1, Flatten, Dense(1): 1,080,577 parameters on 28x28x1."""
    img = keras.Input(IMAGE_SHAPE, name="image")
    x = img
    for filters, strides in ((32, 2), (64, 2), (128, 2), (256, 1)):
        x = layers.LeakyReLU(0.2)(x)
        x = layers.Conv2D(filters, 5, strides=strides, padding="same")(x)
    x = layers.Flatten()(x)
    return keras.Model(img, layers.Dense(1)(x), name="discriminator")


def build_generator(arch: str, z_dim: int) -> keras.Model:
    if arch == "mlp":
        return mlp_generator(z_dim)
    if arch == "dcgan":
        return dcgan_generator(z_dim)
    raise ValueError(f"train.arch: unknown {arch!r}; allowed: {', '.join(ARCHS)}")


def build_discriminator(arch: str) -> keras.Model:
    if arch == "mlp":
        return mlp_discriminator()
    if arch == "dcgan":
        return dcgan_discriminator()
    raise ValueError(f"train.arch: unknown {arch!r}; allowed: {', '.join(ARCHS)}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Print the generator and discriminator summaries.")
    ap.add_argument("--arch", choices=ARCHS, default="dcgan")
    ap.add_argument("--z-dim", type=int, default=100)
    args = ap.parse_args(argv)
    build_generator(args.arch, args.z_dim).summary()
    build_discriminator(args.arch).summary()


if __name__ == "__main__":
    main()
