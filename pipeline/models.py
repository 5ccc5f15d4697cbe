"""Build, load and draw the networks of the registered architectures (pipeline.archs).

    python -m pipeline.models --arch dcgan              # the seeds' summary(): layers and parameter counts
    python -m pipeline.models --arch mlp --plot DIR     # also the diagrams as PNG (the seeds' save_model())
    python -m pipeline.models --arch dcgan --set train.virtual_labels=0   # as `dvc exp run -S` would set it

The numbers come from params.yaml's `train` section (or `--params`).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import keras

from pipeline import archs, layers  # noqa: F401  (layers: registers the custom layers for loading)
from pipeline.errors import StageError

CHANNELS = (1, 3)  # grayscale digits, or Stacked MNIST's three


def build_generator(p, channels: int = 1) -> keras.Model:
    """The generator of `train.arch` (p: params.TrainParams), drawing images of `channels`
    (the data's): all together, or under `train.channel_draw: independent` each channel
    by the same one-channel network from its own slice of z."""
    apart = channels if p.channel_draw == "independent" else 1
    if apart > 1:
        _check_slices(p, apart)
    return archs.REGISTRY[p.arch].generator(p.z_dim, p.arch_params, channels=channels // apart, apart=apart,
                                            virtual_labels=p.virtual_labels, virtual_scale=p.virtual_scale,
                                            virtual_groups=p.virtual_groups,
                                            condition=p.condition, condition_scale=p.condition_scale)


def _check_slices(p, channels: int) -> None:
    """z splits into one slice per channel, each holding its virtual codes."""
    if p.z_dim % channels:
        raise StageError(f"train.z_dim={p.z_dim} must be a multiple of the data's {channels} channels under "
                         "train.channel_draw: independent (each channel is drawn from its own slice of z)")
    if p.virtual_labels * p.virtual_groups > p.z_dim // channels:
        raise StageError(f"train.virtual_labels={p.virtual_labels} times train.virtual_groups={p.virtual_groups} "
                         f"must be at most train.z_dim / {channels} channels = {p.z_dim // channels} under "
                         "train.channel_draw: independent (each channel's codes are read off its own slice)")


def build_discriminator(p, channels: int = 1) -> keras.Model:
    """The discriminator of `train.d_arch` (default: the generator's arch), with its params,
    judging packs of `train.pack` images of `channels`, with their digits under `train.condition`:
    whole, or under `train.channel_judge: independent` each channel by the same one-channel
    discriminator, a logit per channel (n, channels), each a sample of the loss."""
    def build(c: int) -> keras.Model:
        return archs.REGISTRY[p.d_arch_name].discriminator(getattr(p, p.d_arch_name), channels=c, pack=p.pack,
                                                           condition=p.condition)

    if p.channel_judge == "joint" or channels == 1:
        return build(channels)
    if p.condition != "none":
        raise StageError(f"train.channel_judge: independent judges each channel apart and takes no digit; "
                         f"use train.condition: none (got {p.condition})")
    image = keras.Input((28, 28, channels), name="image")
    logits = build(1)(layers.ChannelsAsImages(channels)(image))
    return keras.Model(image, layers.ChannelLogits(channels, dtype="float32")(logits), name="discriminator")


def digit_input(model: keras.Model) -> int | None:
    """Where a conditional generator takes its digit: the position of its one rank-1
    input (`digit`, (n,) int32, 0-9) beside z ((n, z_dim) float32); None for a
    generator of z alone. Found from the inputs' shapes, so any such model qualifies."""
    shapes = [tuple(t.shape) for t in model.inputs]
    if len(shapes) == 2 and sorted(len(s) for s in shapes) == [1, 2]:
        return [len(s) for s in shapes].index(1)
    return None


def z_dim_of(model: keras.Model) -> int:
    return int(next(t.shape[-1] for t in model.inputs if len(t.shape) == 2))


def inputs_for(model: keras.Model, z, digits=None):
    """What to call `model` with: z, or z and the digits in the order of its inputs."""
    at = digit_input(model)
    if (at is None) != (digits is None):
        raise ValueError("digits: a conditional generator needs one digit per z, another takes none")
    return z if at is None else ([digits, z] if at == 0 else [z, digits])


def generate(model: keras.Model, z, digits=None, batch: int = 512):
    """Images (n, 28, 28, c) from z (n, z_dim), and for a conditional generator one
    digit per row (n,), drawn in batches in inference mode."""
    import numpy as np

    inputs_for(model, z, digits)  # checked before any batch runs
    out = []
    for i in range(0, len(z), batch):
        db = None if digits is None else np.asarray(digits[i:i + batch], np.int32)
        out.append(np.asarray(model(inputs_for(model, np.asarray(z[i:i + batch], np.float32), db), training=False)))
    return np.concatenate(out)


def load_generator(path: str | Path) -> keras.Model:
    """A saved generator (n, z_dim) -> (n, 28, 28, c), c 1 or 3, or a conditional one
    ((n, z_dim), (n,) digits) -> (n, 28, 28, 1), checked for that shape."""
    path = Path(path)
    if not path.is_file():
        raise StageError(f"{path}: generator not found")
    model = keras.models.load_model(path, compile=False)
    ranks = sorted(len(t.shape) for t in model.inputs)
    if ranks not in ([2], [1, 2]) or tuple(model.output_shape[1:]) not in [(28, 28, c) for c in CHANNELS]:
        raise StageError(f"{path}: expected a generator (n, z_dim) -> (n, 28, 28, 1 or 3), or one of "
                         f"(z (n, z_dim), digit (n,)), got {[tuple(t.shape) for t in model.inputs]} -> "
                         f"{model.output_shape}")
    return model


def plot(model: keras.Model, target: Path) -> Path:
    """The architecture diagram as a PNG (needs pydot and Graphviz's `dot`)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    keras.utils.plot_model(model, to_file=str(target), show_shapes=True, show_layer_names=True)
    return target


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Print the generator and discriminator summaries.")
    ap.add_argument("--arch", choices=archs.NAMES, default="dcgan")
    ap.add_argument("--params", default="params.yaml", help="params.yaml to take the numbers from")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a params change, as dvc's -S")
    ap.add_argument("--plot", type=Path, metavar="DIR", help="also save the diagrams as PNG here")
    args = ap.parse_args(argv)
    import yaml

    from pipeline import params

    doc = params.with_sets(yaml.safe_load(Path(args.params).read_text()), args.set)
    p = params.override(params.parse("train", doc.get("train")), {"arch": args.arch, "d_arch": None})
    for model in (build_generator(p), build_discriminator(p)):
        model.summary()
        if args.plot:
            print(f"diagram: {plot(model, args.plot / f'{args.arch}_{model.name}.png')}")


if __name__ == "__main__":
    main()
