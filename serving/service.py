"""The frozen generator behind BentoML: latent z-vectors in, digit images out.

    bentoml serve serving.service:Generator --port 3000

Owns the HTTP contract: `/generate` (adaptive batching), `/render`, `/sample`,
`/interpolate`, `/info` (the model card), the `/ui` page, and the input
bounds every endpoint enforces. Loads the generator that `serving.selection`
picks: the registry's champion by default, or what `--arg model=latest|<tag>`
(or MNIST_GAN_MODEL) asks for by name; `/info` says which and why. Reads z_dim
and the output range from the model card saved beside the SavedModel, so a
generator of any z_dim is served without code changes. Imports nothing from
`pipeline/`: the SavedModel and its card are the contract.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Annotated, Literal

import bentoml
import numpy as np
from bentoml.exceptions import BentoMLException
from bentoml.validators import ContentType
from fastapi import FastAPI
from fastapi.responses import FileResponse
from PIL import Image
from pydantic import AfterValidator, BaseModel, Field

from serving import bentoml_private, contract, selection
from serving.guard import RequestGuard, body_bounds, npy_routes, route_limits

# TensorFlow's oneDNN kernels, which it turns on by default only on CPUs with
# AVX-512 VNNI or newer; its Eigen kernels are much slower on the generators'
# transposed convolutions. Set before TensorFlow loads, in the worker.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
Z_BOUND = 10.0          # |z| per component; N(0, 1) draws beyond this carry no meaning
MAX_BATCH = 256         # z-vectors per /generate request
# The in-process bound is reached at batch 64; bigger batches only add latency.
INFER_BATCH = 64
PAGE = Path(__file__).with_name("static") / "index.html"
# Six decimals keep the JSON response within 5e-7 of the float32 image and
# half the size of full float64 reprs, which is what the client parses.
DECIMALS = 6


def _load_card(ref: bentoml.models.BentoModel) -> tuple[str, Path, dict]:
    """The stored model's resolved tag, folder and card, read at import so
    that the request schemas can carry the served z_dim."""
    stored = ref.stored
    if stored is None:
        raise BentoMLException(
            f"model {ref.tag} is not in the BentoML store (BENTOML_HOME); run the "
            "pipeline's export stage, or ask for a stored tag (--arg model=<tag>)")
    path = Path(stored.path)
    return str(stored.tag), path, json.loads((path / contract.CARD).read_text())


if os.environ.get("MNIST_GAN_BATCH_HOLD", "0") != "1":
    # Read by the dispatcher BentoML builds for each batchable API, after this import.
    bentoml_private.pin_no_hold()
bentoml_private.register_npy()

class ServeArgs(BaseModel):
    """`bentoml serve ... --arg model=...` (kept in a Bento built with it)."""
    model: str = contract.CHAMPION


# The environment wins over the argument, so a container can be pointed at another tag.
SELECTOR = os.environ.get("MNIST_GAN_MODEL") or bentoml.use_arguments(ServeArgs).model
try:
    MODEL_TAG, SELECTION = selection.resolve(SELECTOR)
except selection.NoChampion as exc:
    raise BentoMLException(str(exc)) from None
MODEL = bentoml.models.BentoModel(MODEL_TAG)
TAG, MODEL_PATH, CARD = _load_card(MODEL)
Z_DIM = int(CARD["z_dim"])
# (28, 28) digits; (28, 28, 3) for a generator of Stacked MNIST's three stacked digits.
_SHAPE = tuple(int(d) for d in CARD.get("output", {}).get("shape", [None, 28, 28, 1])[1:])
IMAGE_SHAPE = _SHAPE[:-1] if _SHAPE[-1] == 1 else _SHAPE


def _lengths_ok(field: str):
    """A validator naming the offending vector, e.g. `z[1]`, in its message;
    pydantic's own length errors put the index only in `loc`."""
    def check(vectors: list[list[float]]) -> list[list[float]]:
        for i, v in enumerate(vectors):
            if len(v) != Z_DIM:
                where = field if len(vectors) == 1 else f"{field}[{i}]"
                raise ValueError(f"{where}: expected {Z_DIM} numbers (z_dim), got {len(v)}")
        return vectors
    return check


def _length_ok(field: str):
    def check(v: list[float]) -> list[float]:
        if len(v) != Z_DIM:
            raise ValueError(f"{field}: expected {Z_DIM} numbers (z_dim), got {len(v)}")
        return v
    return check


# strict: "0.5" and true are not numbers; allow_inf_nan: JSON's NaN/Infinity are refused.
ZValue = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=-Z_BOUND, le=Z_BOUND)]
_ZList = Annotated[list[ZValue], Field(json_schema_extra={"minItems": Z_DIM, "maxItems": Z_DIM})]
ZBatch = Annotated[list[_ZList], Field(min_length=1, max_length=MAX_BATCH), AfterValidator(_lengths_ok("z"))]


def ZVector(field: str):
    return Annotated[_ZList, AfterValidator(_length_ok(field))]


def _png(img: np.ndarray, scale: int = 1) -> Image.Image:
    """Floats in [0, 1] (h, w) to a grayscale image, (h, w, 3) to an RGB one, upscaled nearest-neighbour."""
    pixels = np.rint(img * 255).astype(np.uint8)
    if scale > 1:
        pixels = pixels.repeat(scale, axis=0).repeat(scale, axis=1)
    return Image.fromarray(pixels)


def grid(images: np.ndarray) -> np.ndarray:
    """(n, h, w[, c]) to one image, ceil(sqrt(n)) columns, empty tiles black."""
    n, h, w, *c = images.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    tiles = np.zeros((rows * cols, *images.shape[1:]), images.dtype)
    tiles[:n] = images
    return tiles.reshape(rows, cols, h, w, *c).swapaxes(1, 2).reshape(rows * h, cols * w, *c)


def path_between(a: np.ndarray, b: np.ndarray, steps: int, method: str) -> np.ndarray:
    """`steps` z-vectors from a to b inclusive, linear or spherical (White 2016), each
    component within +-Z_BOUND: slerp bows outward between two bounded vectors (by up
    to 1/sin(angle/2)), so its frames are clipped to the bound every input keeps."""
    t = np.linspace(0.0, 1.0, steps)[:, None]
    path = (1 - t) * a + t * b
    if method == "slerp":
        cos = np.dot(a, b) / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12)
        omega = np.arccos(np.clip(cos, -1.0, 1.0))
        # Nearly parallel vectors: slerp's weights become 0/0 and linear is the limit.
        if np.sin(omega) > 1e-6:
            path = (np.sin((1 - t) * omega) * a + np.sin(t * omega) * b) / np.sin(omega)
    return np.clip(path, -Z_BOUND, Z_BOUND)


page = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)


@bentoml.asgi_app(page, path="/")
@bentoml.service(
    # One worker: the model is compute-bound on this CPU and one queue makes
    # the biggest batches; see bench/serve_throughput.py.
    workers=int(os.environ.get("MNIST_GAN_WORKERS", "1")),
    threads=1,
    traffic={"timeout": 30},
    logging={"access": {"enabled": os.environ.get("MNIST_GAN_ACCESS_LOG", "0") == "1"}},
)
class Generator:
    model_ref = MODEL

    def __init__(self) -> None:
        import tensorflow as tf

        # auto: one thread per op for the MLP, whose requests are mostly HTTP (on a small
        # CPU the event loop then keeps a core), TF's default for the conv nets, where the
        # model is the cost (bench/serve_throughput.py measured both per arch).
        setting = os.environ.get("MNIST_GAN_TF_THREADS", "auto")
        threads = (1 if CARD.get("arch") == "mlp" else 0) if setting == "auto" else int(setting)
        if threads > 0:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        self.low, self.high = (float(v) for v in CARD["output"]["range"])
        self.model = tf.saved_model.load(str(MODEL_PATH / contract.SAVED_MODEL))
        # Trace and allocate once so the first request is not the slow one.
        self.model.serve(np.zeros((1, Z_DIM), np.float32))

    def _infer(self, z: np.ndarray) -> np.ndarray:
        """(n, z_dim) float32 to images (n, *IMAGE_SHAPE) in [0, 1]."""
        out = self.model.serve(np.ascontiguousarray(z, np.float32)).numpy().reshape(len(z), *IMAGE_SHAPE)
        return np.clip((out - self.low) / (self.high - self.low), 0.0, 1.0)

    @bentoml.api(batchable=True, max_batch_size=INFER_BATCH, max_latency_ms=20_000)
    def generate(self, z: ZBatch) -> Annotated[np.ndarray, ContentType("application/json")]:
        """Images for a batch of z-vectors, as floats in [0, 1] of shape (n, 28, 28), or
        (n, 28, 28, 3) from a three-channel (Stacked MNIST) generator:
        JSON, or with `Accept: application/x-npy` one float32 array in NumPy's .npy format.

        Concurrent requests are batched together (adaptive batching)."""
        return self._infer(np.asarray(z, np.float32)).astype(np.float64).round(DECIMALS)

    @bentoml.api
    def render(self, z: ZVector("z"), scale: Annotated[int, Field(strict=True, ge=1, le=16)] = 1) -> Image.Image:
        """One z-vector as a PNG (grayscale; RGB from a three-channel generator), 28*scale
        pixels square, nearest-neighbour."""
        return _png(self._infer(np.asarray([z]))[0], scale)

    @bentoml.api
    def sample(self, n: Annotated[int, Field(strict=True, ge=1, le=64)] = 16,
               seed: Annotated[int, Field(strict=True, ge=0, le=2**32 - 1)] = 0) -> Image.Image:
        """A PNG grid of n digits from z ~ N(0, 1) drawn with `seed`; a seed always gives the same grid."""
        z = np.random.default_rng(seed).standard_normal((n, Z_DIM)).clip(-Z_BOUND, Z_BOUND)
        return _png(grid(self._infer(z)))

    @bentoml.api
    def interpolate(self, z_start: ZVector("z_start"), z_end: ZVector("z_end"),
                    steps: Annotated[int, Field(strict=True, ge=2, le=32)] = 8,
                    method: Literal["linear", "slerp"] = "linear") -> Image.Image:
        """A PNG strip of `steps` digits walking the latent space from z_start to z_end."""
        z = path_between(np.asarray(z_start), np.asarray(z_end), steps, method)
        return _png(np.concatenate(list(self._infer(z)), axis=1))

    @page.get("/info")
    def info(self) -> dict:
        """The model card, with the BentoML tag and why this model is the one served
        (`selected`); `verdict` only when the card has one."""
        keys = ("z_dim", "arch", "loss", "params", "metrics", "mlflow_run_id", "data_sha256", "output",
                "registered_model", "promotion")
        card = {k: CARD.get(k) for k in keys}
        card["tag"] = TAG
        card["selected"] = SELECTION
        if "verdict" in CARD:
            card["verdict"] = CARD["verdict"]
        card["bounds"] = {"z_abs_max": Z_BOUND, "max_batch": MAX_BATCH, "max_body_bytes": LIMITS_BYTES}
        return card

    @page.get("/ui")
    def ui(self) -> FileResponse:
        """The page people play with."""
        return FileResponse(PAGE, media_type="text/html")


if untraced := bentoml_private.untraced_routes(Generator):
    Generator.config["tracing"] = {**Generator.config.get("tracing", {}), "excluded_urls": untraced}
LIMITS = route_limits(Generator)
LIMITS_BYTES = body_bounds(LIMITS)
Generator.add_asgi_middleware(RequestGuard, limits=LIMITS, npy=npy_routes(Generator),
                              npy_request=bentoml_private.NPY_REQUEST)
