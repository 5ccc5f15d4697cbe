"""The frozen generator behind BentoML: latent z-vectors in, digit images out.

    bentoml serve serving.service:Generator --port 3000

Owns the HTTP contract: `/generate` (adaptive batching), `/render`, `/sample`,
`/interpolate`, `/info` (the model card), the `/ui` page, and the input
bounds every endpoint enforces. Loads the generator that `serving.selection`
picks: the registry's champion of the kind MNIST_GAN_KIND names by default,
or what `--arg model=latest|<tag>` (or MNIST_GAN_MODEL) asks for by name;
`/info` says which and why. Reads z_dim, the output range and whether the
generator is conditional (it draws the digit it is asked for) from the model
card saved beside the SavedModel, so a generator of any z_dim is served
without code changes. Imports nothing from `pipeline/`: the SavedModel and its
card are the contract.
"""
from __future__ import annotations

import concurrent.futures
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
from pydantic import AfterValidator, BaseModel, BeforeValidator, Field, TypeAdapter, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

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
except (selection.NoChampion, ValueError) as exc:  # ValueError: MNIST_GAN_KIND is no kind
    raise BentoMLException(str(exc)) from None
MODEL = bentoml.models.BentoModel(MODEL_TAG)
# /info asks the registry off the request's thread, so that a slow tracking server bounds its wait.
_REGISTRY = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="registry")
REGISTRY_SECONDS = 5
TAG, MODEL_PATH, CARD = _load_card(MODEL)
Z_DIM = int(CARD["z_dim"])
# (28, 28) digits; (28, 28, 3) for a generator of Stacked MNIST's three stacked digits.
_SHAPE = tuple(int(d) for d in CARD.get("output", {}).get("shape", [None, 28, 28, 1])[1:])
IMAGE_SHAPE = _SHAPE[:-1] if _SHAPE[-1] == 1 else _SHAPE
# A conditional generator's SavedModel is serve(z, digit), one digit per z; cards written
# before kinds existed are of generators of z alone.
KIND = contract.kind_of(CARD)
CONDITIONAL = KIND == "conditional"
CLASSES = [int(c) for c in CARD.get("classes") or range(contract.DIGITS)] if CONDITIONAL else []


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


def _shown(value) -> str:
    """A request's value in an error message: as JSON, cut short."""
    text = json.dumps(value, default=repr)
    return text if len(text) <= 40 else text[:37] + "..."


class DigitError(ValueError):
    """A bad `digit`, and where in the body: ("digit",) or ("digit", i)."""

    def __init__(self, message: str, loc: tuple = ("digit",)):
        super().__init__(message)
        self.loc = loc


def _one_digit(value, i: int | None = None) -> int:
    # Strict, as z's numbers are: "7", 7.0 and true are not digits.
    if type(value) is not int or value not in CLASSES:
        where, loc = ("digit", ("digit",)) if i is None else (f"digit[{i}]", ("digit", i))
        raise DigitError(f"{where}: expected an integer from 0 to {len(CLASSES) - 1}, got {_shown(value)}", loc)
    return value


def _no_digit(value) -> None:
    """A digit for a generator that takes none is refused, not ignored: the image would
    not be the digit asked for."""
    if value is not None:
        raise DigitError(f"digit: this generator (kind {KIND}) is not conditional: it draws no digit on request; "
                         "leave digit out")


def _ask_for_digit(per_z: bool) -> DigitError:
    return DigitError(f"digit: this generator is conditional: ask for the digit to draw, 0 to {len(CLASSES) - 1}"
                      + (", one for all z or a list of one per z" if per_z else ""))


def digits(value, n: int) -> np.ndarray:
    """/generate's `digit`: one integer for all n z-vectors, or a list of one per z
    (`digit[i]` names a bad one), as (n,) int32; required of a conditional generator."""
    if value is None:
        raise _ask_for_digit(per_z=True)
    if isinstance(value, list):
        if len(value) != n:
            raise DigitError(f"digit: expected one digit for all z, or a list of one per z ({n}), "
                             f"got a list of {len(value)}")
        return np.array([_one_digit(v, i) for i, v in enumerate(value)], np.int32)
    return np.full(n, _one_digit(value), np.int32)


def _digit_arg(required: bool):
    """The check of one endpoint's `digit`, run also when it is left out. /render and
    /interpolate draw one digit and need it asked for; /sample's grid without one
    draws every digit in turn (None here)."""
    def check(value):
        if not CONDITIONAL:
            return _no_digit(value)
        if value is None:
            if required:
                raise _ask_for_digit(per_z=False)
            return None
        return _one_digit(value)
    return check


_Digit = Annotated[int, Field(ge=0, le=contract.DIGITS - 1)]  # its schema; _one_digit checks it


def DigitArg(required: bool):
    """/render's, /sample's and /interpolate's `digit`: one integer, optional in the schema
    (a generator of z alone takes none) and checked by _digit_arg."""
    about = (("the digit to draw, 0-9; this generator needs one" if required
              else "the digit to draw in every tile, 0-9; left out, tile i draws digit i mod 10")
             if CONDITIONAL else "none: this generator is not conditional")
    return Annotated[_Digit | None, BeforeValidator(_digit_arg(required)),
                     Field(validate_default=True, description=about)]


# /generate's `digit`, for the OpenAPI spec and the guard's bound on the body.
_GenerateDigit = Annotated[
    _Digit | Annotated[list[_Digit], Field(max_length=MAX_BATCH)] | None,
    Field(description="the digit to draw for every z, or a list of one per z" if CONDITIONAL
          else "none: this generator is not conditional")]
# What /generate's batch holds: each z with its digit (0 from a generator that takes none).
ROW = np.dtype([("z", np.float32, (Z_DIM,)), ("digit", np.int32)])


# BentoML batches an API's one argument, so /generate's digit travels inside it: once
# validated, `z` holds a structured array of (z, digit) rows, which batching concatenates
# and splits along axis 0 like any array, each digit staying with its z. A bad digit is
# refused here, before its request joins a batch.
class GenerateInput(bentoml.IODescriptor):
    """z-vectors, and for a conditional generator the digit to draw."""
    z: ZBatch

    @model_validator(mode="wrap")
    @classmethod
    def _rows(cls, data, handler):
        digit = None
        if isinstance(data, dict) and "digit" in data:
            data = dict(data)
            digit = data.pop("digit")
        body = handler(data)
        rows = np.zeros(len(body.z), ROW)
        rows["z"] = body.z
        try:
            if CONDITIONAL:
                rows["digit"] = digits(digit, len(rows))
            else:
                _no_digit(digit)
        except DigitError as exc:
            # Raised as the field's own error, so that its `loc` names it as /render's does.
            error = PydanticCustomError("value_error", "Value error, {error}", {"error": str(exc)})
            raise ValidationError.from_exception_data(
                cls.__name__, [InitErrorDetails(type=error, loc=exc.loc, input=digit)]) from None
        body.z = rows
        return body

    @classmethod
    def model_json_schema(cls, *args, **kwargs) -> dict:
        schema = super().model_json_schema(*args, **kwargs)
        schema["properties"]["digit"] = TypeAdapter(_GenerateDigit).json_schema()
        return schema


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
        self._infer(np.zeros((1, Z_DIM), np.float32), 0)

    def _infer(self, z: np.ndarray, digit=None) -> np.ndarray:
        """(n, z_dim) float32 to images (n, *IMAGE_SHAPE) in [0, 1]. A conditional generator
        draws `digit` (checked already): one for every z, or (n,) one per z; a generator of
        z alone ignores it."""
        z = np.ascontiguousarray(z, np.float32)
        if CONDITIONAL:
            out = self.model.serve(z, np.ascontiguousarray(np.broadcast_to(np.asarray(digit, np.int32), len(z))))
        else:
            out = self.model.serve(z)
        out = out.numpy().reshape(len(z), *IMAGE_SHAPE)
        return np.clip((out - self.low) / (self.high - self.low), 0.0, 1.0)

    @bentoml.api(batchable=True, max_batch_size=INFER_BATCH, max_latency_ms=20_000, input_spec=GenerateInput)
    def generate(self, z: np.ndarray) -> Annotated[np.ndarray, ContentType("application/json")]:
        """Images for a batch of z-vectors, as floats in [0, 1] of shape (n, 28, 28), or
        (n, 28, 28, 3) from a three-channel (Stacked MNIST) generator:
        JSON, or with `Accept: application/x-npy` one float32 array in NumPy's .npy format.
        A conditional generator draws `digit`: one for every z, or a list of one per z.

        Concurrent requests are batched together (adaptive batching)."""
        # z: the batch's (z, digit) rows (GenerateInput).
        return self._infer(z["z"], z["digit"]).astype(np.float64).round(DECIMALS)

    @bentoml.api
    def render(self, z: ZVector("z"), scale: Annotated[int, Field(strict=True, ge=1, le=16)] = 1,
               digit: DigitArg(required=True) = None) -> Image.Image:
        """One z-vector as a PNG (grayscale; RGB from a three-channel generator), 28*scale
        pixels square, nearest-neighbour; the `digit` asked for from a conditional generator."""
        return _png(self._infer(np.asarray([z]), digit)[0], scale)

    @bentoml.api
    def sample(self, n: Annotated[int, Field(strict=True, ge=1, le=64)] = 16,
               seed: Annotated[int, Field(strict=True, ge=0, le=2**32 - 1)] = 0,
               digit: DigitArg(required=False) = None) -> Image.Image:
        """A PNG grid of n digits from z ~ N(0, 1) drawn with `seed`; a seed always gives the same grid.
        A conditional generator draws `digit` in every tile, or without one 0, 1, ..., 9 in turn."""
        z = np.random.default_rng(seed).standard_normal((n, Z_DIM)).clip(-Z_BOUND, Z_BOUND)
        if CONDITIONAL and digit is None:
            digit = np.asarray(CLASSES)[np.arange(n) % len(CLASSES)]  # every digit, in turn
        return _png(grid(self._infer(z, digit)))

    @bentoml.api
    def interpolate(self, z_start: ZVector("z_start"), z_end: ZVector("z_end"),
                    steps: Annotated[int, Field(strict=True, ge=2, le=32)] = 8,
                    method: Literal["linear", "slerp"] = "linear",
                    digit: DigitArg(required=True) = None) -> Image.Image:
        """A PNG strip of `steps` digits walking the latent space from z_start to z_end, all of
        the `digit` asked for from a conditional generator."""
        z = path_between(np.asarray(z_start), np.asarray(z_end), steps, method)
        return _png(np.concatenate(list(self._infer(z, digit)), axis=1))

    @page.get("/info")
    def info(self) -> dict:
        """The model card, with the BentoML tag and why this model is the one served
        (`selected`); `verdict` only when the card has one."""
        keys = ("z_dim", "arch", "loss", "params", "metrics", "mlflow_run_id", "data_sha256", "output",
                "registered_model", "promotion")
        card = {k: CARD.get(k) for k in keys}
        card["tag"] = TAG
        card["selected"] = SELECTION
        card["kind"] = KIND
        card["conditional"] = CONDITIONAL
        if CONDITIONAL:
            card["classes"] = CLASSES
            card["digit_input"] = CARD.get("digit_input")
        if "verdict" in CARD:
            card["verdict"] = CARD["verdict"]
        card["bounds"] = {"z_abs_max": Z_BOUND, "max_batch": MAX_BATCH, "max_body_bytes": LIMITS_BYTES}
        registered = CARD.get("registered_model") or {}
        if registered.get("name"):
            # This server keeps the version it loaded; the registry says whether another is champion now.
            job = _REGISTRY.submit(selection.champion_now, registered["name"], registered.get("version"))
            try:
                card["champion_now"] = job.result(timeout=REGISTRY_SECONDS)
            except concurrent.futures.TimeoutError:
                card["champion_now"] = {"version": None, "newer": False,
                                        "error": f"the registry did not answer in {REGISTRY_SECONDS} s"}
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
