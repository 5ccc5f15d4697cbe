"""Pixel conversions, image grids and PNG files (Pillow)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.atomic import atomic_path


def to_unit(images: np.ndarray) -> np.ndarray:
    """Generator output in [-1, 1] to floats in [0, 1]."""
    return np.clip((np.asarray(images, np.float32) + 1.0) / 2.0, 0.0, 1.0)


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Generator output in [-1, 1], (n, 28, 28[, c]), to 8-bit pixels as a PNG stores them:
    (n, 28, 28) for one channel, (n, 28, 28, c) for more."""
    x = np.rint(to_unit(images) * 255.0).astype(np.uint8)
    return x[..., 0] if x.ndim == 4 and x.shape[-1] == 1 else x


def from_uint8(pixels: np.ndarray) -> np.ndarray:
    """8-bit pixels (n, 28, 28[, c]) to the generator's range [-1, 1], (n, 28, 28, c)."""
    x = pixels.astype(np.float32) / 127.5 - 1.0
    return x[..., None] if x.ndim == 3 else x


def grid(pixels: np.ndarray, cols: int, pad: int = 2) -> np.ndarray:
    """Tile uint8 images (n, h, w[, c]) into one image with `cols` columns."""
    n, h, w = pixels.shape[:3]
    rows = -(-n // cols)
    out = np.zeros((rows * (h + pad) + pad, cols * (w + pad) + pad, *pixels.shape[3:]), np.uint8)
    for i, img in enumerate(pixels):
        r, c = divmod(i, cols)
        out[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = img
    return out


def save_png(pixels: np.ndarray, target: str | Path, scale: int = 1) -> None:
    img = Image.fromarray(pixels, mode="L" if pixels.ndim == 2 else "RGB")
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    with atomic_path(target) as tmp:
        img.save(tmp, format="PNG")
