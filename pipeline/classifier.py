"""The judge network, shared by the stage that trains it (`judge`) and the one
that scores with it (`evaluate`): its builder, its input, its loader and the
embedding the metrics read (class probabilities and the `features` layer).

It stands in for TF-GAN's downloadable MNIST classifier: its softmax gives the
class metrics (modes, KL, classifier score) and its penultimate layer,
`features`, the space for the distance metrics (Fréchet, KID, precision/recall).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline import params
from pipeline.errors import StageError

FEATURES = "features"


def to_input(pixels: np.ndarray) -> np.ndarray:
    """8-bit images (n, 28, 28) to the judge's input: floats in [0, 1], (n, 28, 28, 1)."""
    return (np.asarray(pixels, np.float32) / 255.0)[..., None]


def build(p: params.JudgeParams):
    import keras
    from keras import layers

    x = inp = keras.Input((28, 28, 1), name="image")
    # BatchNorm momentum 0.9, not 0.99: the moving statistics must settle within a few hundred steps.
    for width in (p.width, 2 * p.width):
        x = layers.Conv2D(width, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization(momentum=0.9)(x)
        x = layers.ReLU()(x)
        x = layers.Conv2D(width, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization(momentum=0.9)(x)
        x = layers.ReLU()(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dropout(0.3, seed=p.seed)(x)
    x = layers.Dense(p.feature_dim, activation="relu", name=FEATURES)(x)
    out = layers.Dense(10, activation="softmax", name="probs")(x)
    return keras.Model(inp, out, name="judge")


def load(path: str | Path):
    """The judge as a model image -> (features, probs)."""
    import keras

    path = Path(path)
    if not path.is_file():
        raise StageError(f"{path}: judge not found; run `dvc repro judge` or pass --judge")
    model = keras.models.load_model(path, compile=False)
    return keras.Model(model.inputs, [model.get_layer(FEATURES).output, model.outputs[0]])


def embed(judge, pixels: np.ndarray, batch: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """Judge features (n, feature_dim) and class probabilities (n, 10), float64.

    Images of c channels (n, 28, 28, c), Stacked MNIST's, are read a digit per channel, as
    VEEGAN and PacGAN score them: the features are the channels' side by side (n, c *
    feature_dim), the probabilities those of the 10^c codes (the digits read as a number,
    the first channel first), the channels' outer product, so the most likely code is the
    channels' most likely digits."""
    pixels = np.asarray(pixels)
    if pixels.ndim == 4:
        parts = [embed(judge, pixels[..., c], batch) for c in range(pixels.shape[-1])]
        probs = parts[0][1]
        for _, p in parts[1:]:
            probs = (probs[:, :, None] * p[:, None, :]).reshape(len(p), -1)
        return np.concatenate([f for f, _ in parts], axis=1), probs
    feats, probs = [], []
    for i in range(0, len(pixels), batch):
        f, p = judge.predict_on_batch(to_input(pixels[i:i + batch]))
        feats.append(np.asarray(f, np.float64))
        probs.append(np.asarray(p, np.float64))
    return np.concatenate(feats), np.concatenate(probs)
