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

from pipeline.params import DCGANArch, DCGANPaperArch, DCGANUpsampleArch, MLPArch, TrainParams

CHANNELS = (1, 3)  # grayscale digits, or Stacked MNIST's three


@keras.saving.register_keras_serializable(package="mnist_gan")
class Pack(layers.Layer):
    """(n, h, w, c) -> (n / m, h, w, m * c): each m consecutive images as one, concatenated
    along the channels (PacGAN's packing; n must be a multiple of m)."""

    def __init__(self, m: int, **kw):
        super().__init__(**kw)
        self.m = m

    def call(self, x):
        from keras import ops

        _, h, w, c = x.shape
        x = ops.reshape(x, (-1, self.m, h, w, c))
        return ops.reshape(ops.transpose(x, (0, 2, 3, 1, 4)), (-1, h, w, self.m * c))

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        return (None if n is None else n // self.m, h, w, c * self.m)

    def get_config(self):
        return {**super().get_config(), "m": self.m}


def image_input(channels: int = 1, pack: int = 1):
    """A discriminator's input (n, 28, 28, channels) and what its first layer reads: the
    images, or packs of `pack` of them (train.pack)."""
    img = keras.Input((28, 28, channels), name="image")
    return img, (Pack(pack)(img) if pack > 1 else img)


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


def mlp_generator(z_dim: int, a: MLPArch, channels: int = 1, **virtual) -> keras.Model:
    """Seed 004: Dense blocks (128-256-512-1024), each LeakyReLU + BatchNorm(0.8), then Dense(784, tanh)."""
    z, x = latent(z_dim, **virtual)
    for units in a.g_units:
        x = layers.Dense(units)(x)
        x = layers.LeakyReLU(a.leaky_slope)(x)
        x = layers.BatchNormalization(momentum=a.g_bn_momentum)(x)
    x = layers.Reshape((28, 28, channels))(layers.Dense(28 * 28 * channels)(x))
    return keras.Model(z, layers.Activation("tanh", dtype="float32")(x), name="generator")


def mlp_discriminator(a: MLPArch, channels: int = 1, pack: int = 1) -> keras.Model:
    """Seed 004: Flatten, Dense(784), LeakyReLU(0.2), Dense(392), LeakyReLU(0.2), Dense(1);
    optionally Dropout after each LeakyReLU."""
    img, x = image_input(channels, pack)
    x = layers.Flatten()(x)
    for units in a.d_units:
        x = layers.LeakyReLU(a.leaky_slope)(layers.Dense(units)(x))
        if a.d_dropout:
            x = layers.Dropout(a.d_dropout)(x)
    return keras.Model(img, layers.Dense(1, dtype="float32")(x), name="discriminator")


def dcgan_generator(z_dim: int, a: DCGANArch, channels: int = 1, **virtual) -> keras.Model:
    """Seed 001 (Atienza): Dense to 7x7x128, then BatchNorm-ReLU-Conv2DTranspose
    blocks (filters 128/64/32/1, kernel 5, strides 2/2/1/1); tanh for [-1, 1]."""
    z, x = latent(z_dim, **virtual)
    x = layers.Dense(7 * 7 * a.g_filters[0])(x)
    x = layers.Reshape((7, 7, a.g_filters[0]))(x)
    for filters, strides in zip([*a.g_filters[:-1], channels], a.g_strides):
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
        x = layers.Conv2DTranspose(filters, a.kernel_size, strides=strides, padding="same")(x)
    return keras.Model(z, layers.Activation("tanh", dtype="float32")(x), name="generator")


def dcgan_discriminator(a: DCGANArch, channels: int = 1, pack: int = 1) -> keras.Model:
    """Seed 001: LeakyReLU-Conv2D blocks (filters 32/64/128/256, kernel 5, strides
    2/2/2/1), Flatten, Dense(1): 1,080,577 parameters on 28x28x1."""
    img, x = image_input(channels, pack)
    for filters, strides in zip(a.d_filters, a.d_strides):
        x = layers.LeakyReLU(a.leaky_slope)(x)
        x = layers.Conv2D(filters, a.kernel_size, strides=strides, padding="same")(x)
    x = layers.Flatten()(x)
    return keras.Model(img, layers.Dense(1, dtype="float32")(x), name="discriminator")


def _activation(name: str):
    return layers.LeakyReLU(0.2) if name == "leaky_relu" else layers.Activation(name)


def upsample_generator(z_dim: int, a: DCGANUpsampleArch, channels: int = 1, **virtual) -> keras.Model:
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
    return keras.Model(z, layers.Activation("tanh", dtype="float32")(x), name="generator")


def upsample_discriminator(a: DCGANUpsampleArch, channels: int = 1, pack: int = 1) -> keras.Model:
    """Seeds 000/002: Conv2D (filters 64/64/128/128, kernel 5, strides 2/2/2/1), optional
    BatchNorm after the first, activation, Dropout(0.4); Flatten, Dense(1)."""
    init = keras.initializers.RandomNormal(stddev=a.init_stddev)
    img, x = image_input(channels, pack)
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


def paper_generator(z_dim: int, a: DCGANPaperArch, channels: int = 1, **virtual) -> keras.Model:
    """VEEGAN's and PacGAN's Stacked MNIST DCGAN (params.DCGANPaperArch): 2x2 -> 4x4 -> 7x7
    -> 14x14 -> 28x28, as TensorFlow's conv2d_transpose with an output shape of 7 computes
    it from 4 (Keras' 8, less its first row and column)."""
    init = keras.initializers.RandomNormal(stddev=0.02)
    z, x = latent(z_dim, **virtual)
    x = layers.Reshape((2, 2, 8 * a.gf))(layers.Dense(2 * 2 * 8 * a.gf)(x))
    for i, filters in enumerate((4 * a.gf, 2 * a.gf, a.gf, channels)):
        x = layers.ReLU()(layers.BatchNormalization(momentum=a.bn_momentum, epsilon=1e-5)(x))
        x = layers.Conv2DTranspose(filters, a.kernel_size, strides=2, padding="same", kernel_initializer=init)(x)
        if i == 1:
            x = layers.Cropping2D(((1, 0), (1, 0)))(x)
    return keras.Model(z, layers.Activation("tanh", dtype="float32")(x), name="generator")


def paper_discriminator(a: DCGANPaperArch, channels: int = 1, pack: int = 1) -> keras.Model:
    """Its discriminator: Conv2D (df, 2df, 4df, 8df; kernel 5, stride 2), BatchNorm after
    the first, LeakyReLU; Flatten, Dense(1)."""
    init = keras.initializers.RandomNormal(stddev=0.02)
    img, x = image_input(channels, pack)
    for i, filters in enumerate((a.df, 2 * a.df, 4 * a.df, 8 * a.df)):
        x = layers.Conv2D(filters, a.kernel_size, strides=2, padding="same", kernel_initializer=init)(x)
        if i:
            x = layers.BatchNormalization(momentum=a.bn_momentum, epsilon=1e-5)(x)
        x = layers.LeakyReLU(a.leaky_slope)(x)
    x = layers.Flatten()(x)
    return keras.Model(img, layers.Dense(1, dtype="float32")(x), name="discriminator")


# The one registry of architectures: each name is a `train.arch` value and a
# `train.<name>` params section (TrainParams checks both against this table).
REGISTRY = {
    "mlp": (mlp_generator, mlp_discriminator),
    "dcgan": (dcgan_generator, dcgan_discriminator),
    "dcgan_upsample": (upsample_generator, upsample_discriminator),
    "dcgan_paper": (paper_generator, paper_discriminator),
}
ARCHS = tuple(REGISTRY)


def build_generator(p: TrainParams, channels: int = 1) -> keras.Model:
    """The generator of `train.arch`, drawing images of `channels` (the data's)."""
    return REGISTRY[p.arch][0](p.z_dim, p.arch_params, channels=channels, virtual_labels=p.virtual_labels,
                               virtual_scale=p.virtual_scale)


def build_discriminator(p: TrainParams, channels: int = 1) -> keras.Model:
    """The discriminator of `train.d_arch` (default: the generator's arch), with its params,
    judging packs of `train.pack` images of `channels`."""
    return REGISTRY[p.d_arch_name][1](getattr(p, p.d_arch_name), channels=channels, pack=p.pack)


def load_generator(path: str | Path) -> keras.Model:
    """A saved generator (n, z_dim) -> (n, 28, 28, c), c 1 or 3, checked for that shape."""
    from pipeline.errors import StageError

    path = Path(path)
    if not path.is_file():
        raise StageError(f"{path}: generator not found")
    model = keras.models.load_model(path, compile=False)
    if len(model.input_shape) != 2 or tuple(model.output_shape[1:]) not in [(28, 28, c) for c in CHANNELS]:
        raise StageError(f"{path}: expected a generator (n, z_dim) -> (n, 28, 28, 1 or 3), "
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
