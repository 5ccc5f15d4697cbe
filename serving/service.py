"""The frozen generator behind BentoML: latent z-vectors in, digit images out.

    bentoml serve serving.service:Generator --port 3000

Loads `mnist_gan_generator:latest` from the BentoML store (the env variable
MNIST_GAN_MODEL_TAG pins another tag) and reads z_dim and the output range
from the model card saved beside the SavedModel. Imports nothing from
`pipeline/`: the SavedModel and its card are the contract.
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Annotated

import bentoml
import numpy as np
from bentoml.exceptions import BadInput
from PIL import Image
from pydantic import Field

MODEL_TAG = os.environ.get("MNIST_GAN_MODEL_TAG", "mnist_gan_generator:latest")
Z_BOUND = 10.0     # |z| per component; N(0, 1) draws beyond this carry no meaning
MAX_BATCH = 256    # z-vectors per /generate request

ZValue = Annotated[float, Field(allow_inf_nan=False, ge=-Z_BOUND, le=Z_BOUND)]
ZVector = Annotated[list[ZValue], Field(min_length=1, max_length=4096)]


@bentoml.service(traffic={"timeout": 30})
class Generator:
    model_ref = bentoml.models.BentoModel(MODEL_TAG)

    def __init__(self) -> None:
        import tensorflow as tf

        path = Path(self.model_ref.path)
        self.card = json.loads((path / "model_card.json").read_text())
        self.z_dim = int(self.card["z_dim"])
        self.low, self.high = (float(v) for v in self.card["output"]["range"])
        self.model = tf.saved_model.load(str(path / "saved_model"))

    def _infer(self, z: np.ndarray) -> np.ndarray:
        """(n, z_dim) float32 to images (n, 28, 28) in [0, 1]."""
        out = self.model.serve(z).numpy().reshape(len(z), 28, 28)
        return np.clip((out - self.low) / (self.high - self.low), 0.0, 1.0)

    def _check(self, vectors: list[list[float]], field: str) -> np.ndarray:
        for i, v in enumerate(vectors):
            if len(v) != self.z_dim:
                where = field if len(vectors) == 1 and field == "z" else f"{field}[{i}]"
                raise BadInput(f"{where}: expected {self.z_dim} floats (z_dim), got {len(v)}")
        return np.asarray(vectors, dtype=np.float32)

    @bentoml.api
    def generate(
        self,
        z: Annotated[list[ZVector], Field(min_length=1, max_length=MAX_BATCH)],
    ) -> list:
        """Images for a batch of z-vectors, as floats in [0, 1] of shape (n, 28, 28)."""
        return self._infer(self._check(z, "z")).tolist()

    @bentoml.api
    def render(self, z: ZVector) -> Image.Image:
        """One z-vector as a 28x28 grayscale PNG."""
        img = self._infer(self._check([z], "z"))[0]
        return Image.fromarray(np.rint(img * 255).astype(np.uint8), mode="L")
