"""Generator and discriminator builders for the seeds' architectures.

    python -m pipeline.models --arch dcgan              # the seeds' summary(): layers and parameter counts
    python -m pipeline.models --arch mlp --plot DIR     # also the diagrams as PNG (the seeds' save_model())

Every number comes from the arch's params (params.yaml `train.<arch>`), whose
defaults are the seeds' values. Discriminators output logits; the losses apply
the sigmoid where they need one (numerically stable, and equivalent to the
seeds' sigmoid + binary cross-entropy). The last layer of each network computes
in float32 whatever the precision policy (keras' advice for mixed precision:
images and logits keep full range), a no-op in a float32 run.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import keras
from keras import layers

from pipeline.params import DCGANArch, DCGANUpsampleArch, MLPArch, TrainParams

IMAGE_SHAPE = (28, 28, 1)


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
        from keras import ops

        code = ops.one_hot(ops.argmax(z[:, :self.k], axis=-1), self.k, dtype=z.dtype)
        return ops.concatenate([z, code * self.scale], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] + self.k)

    def get_config(self):
        return {**super().get_config(), "k": self.k, "scale": self.scale}


def latent(z_dim: int, virtual_labels: int = 0, virtual_scale: float = 4.0):
    """The generator's input z and what its first layer reads: z, or z with its
    virtual label (`train.virtual_labels`)."""
    z = keras.Input((z_dim,), name="z")
    return z, (VirtualLabel(virtual_labels, virtual_scale)(z) if virtual_labels else z)


def mlp_generator(z_dim: int, a: MLPArch, **virtual) -> keras.Model:
    """Seed 004: Dense blocks (128-256-512-1024), each LeakyReLU + BatchNorm(0.8), then Dense(784, tanh)."""
    z, x = latent(z_dim, **virtual)
    for units in a.g_units:
        x = layers.Dense(units)(x)
        x = layers.LeakyReLU(a.leaky_slope)(x)
        x = layers.BatchNormalization(momentum=a.g_bn_momentum)(x)
    x = layers.Reshape(IMAGE_SHAPE)(layers.Dense(28 * 28)(x))
    return keras.Model(z, layers.Activation("tanh", dtype="float32")(x), name="generator")


def mlp_discriminator(a: MLPArch) -> keras.Model:
    """Seed 004: Flatten, Dense(784), LeakyReLU(0.2), Dense(392), LeakyReLU(0.2), Dense(1);
    optionally Dropout after each LeakyReLU."""
    img = keras.Input(IMAGE_SHAPE, name="image")
    x = layers.Flatten()(img)
    for units in a.d_units:
        x = layers.LeakyReLU(a.leaky_slope)(layers.Dense(units)(x))
        if a.d_dropout:
            x = layers.Dropout(a.d_dropout)(x)
    return keras.Model(img, layers.Dense(1, dtype="float32")(x), name="discriminator")


def dcgan_generator(z_dim: int, a: DCGANArch, **virtual) -> keras.Model:
    """Seed 001 (Atienza): Dense to 7x7x128, then BatchNorm-ReLU-Conv2DTranspose
    blocks (filters 128/64/32/1, kernel 5, strides 2/2/1/1); tanh for [-1, 1]."""
    z, x = latent(z_dim, **virtual)
    x = layers.Dense(7 * 7 * a.g_filters[0])(x)
    x = layers.Reshape((7, 7, a.g_filters[0]))(x)
    for filters, strides in zip(a.g_filters, a.g_strides):
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
        x = layers.Conv2DTranspose(filters, a.kernel_size, strides=strides, padding="same")(x)
    return keras.Model(z, layers.Activation("tanh", dtype="float32")(x), name="generator")


def dcgan_discriminator(a: DCGANArch) -> keras.Model:
    """Seed 001: LeakyReLU-Conv2D blocks (filters 32/64/128/256, kernel 5, strides
    2/2/2/1), Flatten, Dense(1): 1,080,577 parameters on 28x28x1."""
    img = keras.Input(IMAGE_SHAPE, name="image")
    x = img
    for filters, strides in zip(a.d_filters, a.d_strides):
        x = layers.LeakyReLU(a.leaky_slope)(x)
        x = layers.Conv2D(filters, a.kernel_size, strides=strides, padding="same")(x)
    x = layers.Flatten()(x)
    return keras.Model(img, layers.Dense(1, dtype="float32")(x), name="discriminator")


def _activation(name: str):
    return layers.LeakyReLU(0.2) if name == "leaky_relu" else layers.Activation(name)


def upsample_generator(z_dim: int, a: DCGANUpsampleArch, **virtual) -> keras.Model:
    """Seeds 000/002 (Foster): Dense(7*7*64), BatchNorm, ReLU, Reshape(7,7,64), then per
    layer UpSampling2D (factor 2) + Conv2D, or one Conv2DTranspose with that stride
    (`upscale: transpose`, seed 002's comparison); BatchNorm + ReLU between, tanh last."""
    init = keras.initializers.RandomNormal(stddev=a.init_stddev)
    z, x = latent(z_dim, **virtual)
    x = layers.Dense(a.g_dense_shape[0] * a.g_dense_shape[1] * a.g_dense_shape[2], kernel_initializer=init)(x)
    x = layers.BatchNormalization(momentum=a.g_bn_momentum)(x)
    x = _activation(a.activation)(x)
    x = layers.Reshape(tuple(a.g_dense_shape))(x)
    last = len(a.g_filters) - 1
    for i, (filters, factor) in enumerate(zip(a.g_filters, a.g_upsample)):
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
    return keras.Model(z, layers.Activation("tanh", dtype="float32")(x), name="generator")


def upsample_discriminator(a: DCGANUpsampleArch) -> keras.Model:
    """Seeds 000/002: Conv2D (filters 64/64/128/128, kernel 5, strides 2/2/2/1), optional
    BatchNorm after the first, activation, Dropout(0.4); Flatten, Dense(1)."""
    init = keras.initializers.RandomNormal(stddev=a.init_stddev)
    img = keras.Input(IMAGE_SHAPE, name="image")
    x = img
    for i, (filters, strides) in enumerate(zip(a.d_filters, a.d_strides)):
        x = layers.Conv2D(filters, a.kernel_size, strides=strides, padding="same", kernel_initializer=init,
                          name=f"discriminator_conv_{i}")(x)
        if a.d_bn_momentum and i > 0:
            x = layers.BatchNormalization(momentum=a.d_bn_momentum)(x)
        x = _activation(a.activation)(x)
        if a.d_dropout:
            x = layers.Dropout(a.d_dropout)(x)
    x = layers.Flatten()(x)
    return keras.Model(img, layers.Dense(1, kernel_initializer=init, dtype="float32")(x), name="discriminator")


# The one registry of architectures: each name is a `train.arch` value and a
# `train.<name>` params section (TrainParams checks both against this table).
REGISTRY = {
    "mlp": (mlp_generator, mlp_discriminator),
    "dcgan": (dcgan_generator, dcgan_discriminator),
    "dcgan_upsample": (upsample_generator, upsample_discriminator),
}
ARCHS = tuple(REGISTRY)


def build_generator(p: TrainParams) -> keras.Model:
    return REGISTRY[p.arch][0](p.z_dim, p.arch_params, virtual_labels=p.virtual_labels,
                               virtual_scale=p.virtual_scale)


def build_discriminator(p: TrainParams) -> keras.Model:
    """The discriminator of `train.d_arch` (default: the generator's arch), with its params."""
    return REGISTRY[p.d_arch_name][1](getattr(p, p.d_arch_name))


def load_generator(path: str | Path) -> keras.Model:
    """A saved generator (n, z_dim) -> (n, 28, 28, 1), checked for that shape."""
    from pipeline.errors import StageError

    path = Path(path)
    if not path.is_file():
        raise StageError(f"{path}: generator not found")
    model = keras.models.load_model(path, compile=False)
    if len(model.input_shape) != 2 or tuple(model.output_shape[1:]) != IMAGE_SHAPE:
        raise StageError(f"{path}: expected a generator (n, z_dim) -> (n, 28, 28, 1), "
                         f"got {model.input_shape} -> {model.output_shape}")
    return model


def plot(model: keras.Model, target: Path) -> Path:
    """The architecture diagram as a PNG (needs pydot and Graphviz's `dot`)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    keras.utils.plot_model(model, to_file=str(target), show_shapes=True, show_layer_names=True)
    return target


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Print the generator and discriminator summaries.")
    ap.add_argument("--arch", choices=ARCHS, default="dcgan")
    ap.add_argument("--z-dim", type=int, default=100)
    ap.add_argument("--params", help="params.yaml to take the arch's numbers from (default: the seeds')")
    ap.add_argument("--plot", type=Path, metavar="DIR", help="also save the diagrams as PNG here")
    args = ap.parse_args(argv)
    from pipeline import params

    base = params.load("train", args.params).model_dump() if args.params else {}
    p = params.TrainParams.model_validate({**base, "arch": args.arch, "z_dim": args.z_dim})
    for model in (build_generator(p), build_discriminator(p)):
        model.summary()
        if args.plot:
            print(f"diagram: {plot(model, args.plot / f'{args.arch}_{model.name}.png')}")


if __name__ == "__main__":
    main()
