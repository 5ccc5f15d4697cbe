"""The one place that reaches into BentoML's private code: the batching hold, the
`.npy` response and the tracing of the API routes. Each reach checks first that
the code still has the shape it relies on and raises BentoMLChanged, naming what
changed, where it does not (a BentoML upgrade then fails at start-up and in
tests/test_bentoml_private.py, not silently).

**Batching hold.** BentoML's CorkDispatcher (bentoml._internal.marshal.dispatcher) holds a lone
request for about the average wait of past batches, which its `Optimizer`
keeps as `wait`. After a burst, where requests waited behind a running batch,
that average is large and feeds on itself: single requests then waited ~60-100
ms each (bench/serve_throughput.py, concurrency 1 after 32). `pin_no_hold()`
swaps in an Optimizer whose `wait` is always 0: a batch leaves as soon as the
model is free, holding whatever queued meanwhile, so batch size still follows
the load.

**`.npy` responses.** BentoML picks the (de)serializer of an API call from the
request's Content-Type, in `_bentoml_impl.serde.ALL_SERDE`, and writes the answer
with the same one. `register_npy()` adds one that reads the JSON body as the JSON
serializer does and writes an ndarray answer as NumPy's `.npy` (float32), under a
media type of its own; the service's guard gives a request that media type when it
asks for `Accept: application/x-npy`. Batching, validation and the 400 messages stay
BentoML's: only the answer's encoding differs.

**Tracing.** BentoML puts OpenTelemetry's ASGI middleware in front of every
route, whether or not any trace is kept: with `tracing.sample_rate` unset or 0
(BentoML's default) it still makes a span per request and more per body
message, a measurable share of a single-z `/generate` (docs/serving.md#speed).
`untraced_routes()` names the routes to leave out of tracing
(`tracing.excluded_urls`) while no trace is sampled; with a sample rate above 0
it names none, and every route is traced as configured.
"""
from __future__ import annotations

import inspect
import re


class BentoMLChanged(RuntimeError):
    pass


def _dispatcher():
    from bentoml._internal.marshal import dispatcher

    return dispatcher


def check_batching() -> None:
    """Raises BentoMLChanged unless CorkDispatcher builds an `Optimizer` of its module
    and decides its hold from that optimizer's `wait`."""
    d = _dispatcher()
    cork, optimizer = getattr(d, "CorkDispatcher", None), getattr(d, "Optimizer", None)
    if cork is None or optimizer is None:
        raise BentoMLChanged("bentoml._internal.marshal.dispatcher has no CorkDispatcher or Optimizer any more; "
                             "serving/bentoml_private.py needs a new way to pin the batch hold")
    source = inspect.getsource(cork)
    for needle in ("Optimizer(", "self.optimizer.wait"):
        if needle not in source:
            raise BentoMLChanged(f"BentoML's CorkDispatcher no longer uses {needle!r}; "
                                 "serving/bentoml_private.py needs a new way to pin the batch hold")
    if "wait" not in inspect.getsource(optimizer.__init__):
        raise BentoMLChanged("BentoML's batching Optimizer no longer keeps `wait`; see serving/bentoml_private.py")


def pin_no_hold() -> type:
    """Makes every CorkDispatcher built after this call hold no request; returns the
    Optimizer class it installed (idempotent)."""
    check_batching()
    d = _dispatcher()
    if getattr(d.Optimizer, "no_hold", False):
        return d.Optimizer

    class NoHoldOptimizer(d.Optimizer):
        """BentoML's batching optimizer with its learned hold time pinned to 0."""
        no_hold = True

        @property
        def wait(self) -> float:
            return 0.0

        @wait.setter
        def wait(self, value: float) -> None:
            pass

    d.Optimizer = NoHoldOptimizer
    return NoHoldOptimizer


NPY = "application/x-npy"
# The Content-Type the guard gives a JSON request that accepts .npy (never sent by clients).
NPY_REQUEST = "application/vnd.mnist-gan.json-to-npy"


def check_serde() -> None:
    """Raises BentoMLChanged unless ALL_SERDE maps media types to serializer classes
    with JSONSerde among them, its Payload takes headers as metadata, and the server
    picks the serializer from the request's Content-Type."""
    try:
        from _bentoml_impl import serde
        from _bentoml_impl.server import app
    except ImportError as exc:
        raise BentoMLChanged(f"BentoML's serializers moved ({exc}); see serving/bentoml_private.py") from None
    table = getattr(serde, "ALL_SERDE", None)
    if not isinstance(table, dict) or table.get("application/json") is not getattr(serde, "JSONSerde", object()):
        raise BentoMLChanged("_bentoml_impl.serde.ALL_SERDE no longer maps application/json to JSONSerde; "
                             "serving/bentoml_private.py needs a new way to answer .npy")
    if "metadata" not in {f.name for f in serde.Payload.__attrs_attrs__}:
        raise BentoMLChanged("_bentoml_impl.serde.Payload has no metadata (headers) any more; "
                             "see serving/bentoml_private.py")
    source = inspect.getsource(app)
    if "ALL_SERDE.get(media_type" not in source or "output_spec.to_http_response(output, serde)" not in source:
        raise BentoMLChanged("BentoML's server no longer picks the serializer from the request's Content-Type; "
                             "serving/bentoml_private.py needs a new way to answer .npy")


def register_npy() -> type:
    """Adds the JSON-in, .npy-out serializer under NPY_REQUEST; returns its class (idempotent)."""
    check_serde()
    import io

    import numpy as np
    from _bentoml_impl import serde

    if NPY_REQUEST in serde.ALL_SERDE:
        return serde.ALL_SERDE[NPY_REQUEST]

    class NpySerde(serde.JSONSerde):
        media_type = NPY_REQUEST

        def serialize_model(self, model):
            root = getattr(model, "root", None)
            if not isinstance(root, np.ndarray):
                return super().serialize_model(model)
            buf = io.BytesIO()
            np.save(buf, np.ascontiguousarray(root, np.float32), allow_pickle=False)
            return serde.Payload((buf.getvalue(),), metadata={"content-type": NPY})

    serde.ALL_SERDE[NPY_REQUEST] = NpySerde
    return NpySerde


def sample_rate() -> float:
    """The `tracing.sample_rate` of BentoML's configuration (BENTOML_CONFIG,
    BENTOML_CONFIG_OPTIONS), 0 where unset."""
    try:
        from bentoml._internal.configuration.containers import BentoMLContainer

        rate = BentoMLContainer.config.tracing.sample_rate.get()
    except (ImportError, AttributeError, KeyError) as exc:
        raise BentoMLChanged(f"BentoML's configuration has no tracing.sample_rate any more ({exc}); "
                             "see serving/bentoml_private.py") from None
    return float(rate or 0.0)


def untraced_routes(service) -> list[str]:
    """`tracing.excluded_urls` patterns for every API route of a service when no trace
    is sampled; none when one is (OpenTelemetry matches them against the request URL,
    query string excluded)."""
    if sample_rate() > 0:
        return []
    return [f"{re.escape(api.route)}$" for api in service.apis.values()]
