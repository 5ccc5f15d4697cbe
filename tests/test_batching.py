"""serving/batching.py against the installed BentoML: the private code it patches
still has the shape it relies on, and a dispatcher built after the patch never
holds a request. Fails, naming what changed, when a BentoML upgrade moves it."""
import bentoml
from bentoml._internal.marshal import dispatcher

from serving import batching


def test_bentoml_batching_still_has_the_shape_the_patch_relies_on():
    batching.check()  # raises BentoMLChanged otherwise


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
        batching.check()
    except batching.BentoMLChanged as exc:
        assert "Optimizer" in str(exc) and "serving/batching.py" in str(exc)
    else:
        raise AssertionError("a missing Optimizer went unnoticed")
    assert bentoml.__version__
