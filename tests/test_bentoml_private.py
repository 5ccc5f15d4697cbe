"""serving/bentoml_private.py against the installed BentoML: the private code it
patches still has the shape it relies on, a dispatcher built after the patch never
holds a request, and the .npy serializer writes what np.load reads. Fails, naming
what changed, when a BentoML upgrade moves it."""
from bentoml._internal.marshal import dispatcher

from serving import bentoml_private as batching


def test_bentoml_batching_still_has_the_shape_the_patch_relies_on():
    batching.check_batching()  # raises BentoMLChanged otherwise


def test_a_dispatcher_built_after_the_patch_holds_nothing():
    before = dispatcher.Optimizer
    try:
        installed = batching.pin_no_hold()
        assert batching.pin_no_hold() is installed  # once, not stacked
        cork = dispatcher.CorkDispatcher(max_latency_in_ms=1000, max_batch_size=64, fallback=lambda: None)
        assert isinstance(cork.optimizer, installed) and isinstance(cork.optimizer, before)
        cork.optimizer.wait = 5.0  # what BentoML's own bookkeeping assigns after a burst
        assert cork.optimizer.wait == 0.0
        # The rest of the optimizer is BentoML's: it still learns the batch cost.
        assert hasattr(cork.optimizer, "o_a") and hasattr(cork.optimizer, "o_b")
    finally:
        dispatcher.Optimizer = before
    plain = dispatcher.CorkDispatcher(max_latency_in_ms=1000, max_batch_size=64, fallback=lambda: None)
    plain.optimizer.wait = 5.0
    assert plain.optimizer.wait == 5.0, "the unpatched optimizer keeps its wait: the test above could fail"


def test_the_patch_names_a_change_in_bentoml(monkeypatch):
    monkeypatch.delattr(dispatcher, "Optimizer")
    try:
        batching.check_batching()
    except batching.BentoMLChanged as exc:
        assert "Optimizer" in str(exc) and "serving/bentoml_private.py" in str(exc)
    else:
        raise AssertionError("a missing Optimizer went unnoticed")


def test_serde_still_has_the_shape_the_npy_answer_relies_on():
    batching.check_serde()


def test_npy_serializer_reads_json_and_writes_what_np_load_reads():
    import io

    import numpy as np
    from _bentoml_impl import serde

    cls = batching.register_npy()
    assert batching.register_npy() is cls and serde.ALL_SERDE[batching.NPY_REQUEST] is cls
    images = np.random.default_rng(0).random((3, 28, 28))

    from _bentoml_sdk.io_models import IORootModel
    from pydantic import ConfigDict

    class Root(IORootModel):
        model_config = ConfigDict(arbitrary_types_allowed=True)
        root: np.ndarray

    payload = cls().serialize_model(Root(images))
    assert payload.headers["content-type"] == batching.NPY
    got = np.load(io.BytesIO(b"".join(payload.data)), allow_pickle=False)
    assert got.dtype == np.float32 and got.shape == (3, 28, 28)
    np.testing.assert_allclose(got, images, atol=1e-7)


def test_api_routes_are_left_out_of_tracing_only_while_no_trace_is_sampled():
    import bentoml
    from bentoml._internal.configuration.containers import BentoMLContainer

    @bentoml.service
    class Two:
        @bentoml.api
        def first(self, x: int) -> int:
            return x

        @bentoml.api(route="/second.v2")
        def second(self, x: int) -> int:
            return x

    rate = BentoMLContainer.config.tracing.sample_rate
    before = rate.get()
    try:
        rate.set(None)  # BentoML's default: no trace is kept
        assert batching.untraced_routes(Two) == [r"/first$", r"/second\.v2$"]
        rate.set(0.25)
        assert batching.untraced_routes(Two) == []
    finally:
        rate.set(before)
