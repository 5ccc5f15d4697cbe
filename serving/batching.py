"""The one place that reaches into BentoML's private batching code.

BentoML's CorkDispatcher (bentoml._internal.marshal.dispatcher) holds a lone
request for about the average wait of past batches, which its `Optimizer`
keeps as `wait`. After a burst, where requests waited behind a running batch,
that average is large and feeds on itself: single requests then waited ~60-100
ms each (bench/serve_throughput.py, concurrency 1 after 32). `pin_no_hold()`
swaps in an Optimizer whose `wait` is always 0: a batch leaves as soon as the
model is free, holding whatever queued meanwhile, so batch size still follows
the load. It checks first that the private code still has the shape this
relies on and raises, naming what changed, where it does not (a BentoML
upgrade then fails at start-up and in tests/test_batching.py, not silently).
"""
from __future__ import annotations

import inspect


class BentoMLChanged(RuntimeError):
    pass


def _dispatcher():
    from bentoml._internal.marshal import dispatcher

    return dispatcher


def check() -> None:
    """Raises BentoMLChanged unless CorkDispatcher builds an `Optimizer` of its module
    and decides its hold from that optimizer's `wait`."""
    d = _dispatcher()
    cork, optimizer = getattr(d, "CorkDispatcher", None), getattr(d, "Optimizer", None)
    if cork is None or optimizer is None:
        raise BentoMLChanged("bentoml._internal.marshal.dispatcher has no CorkDispatcher or Optimizer any more; "
                             "serving/batching.py needs a new way to pin the batch hold")
    source = inspect.getsource(cork)
    for needle in ("Optimizer(", "self.optimizer.wait"):
        if needle not in source:
            raise BentoMLChanged(f"BentoML's CorkDispatcher no longer uses {needle!r}; "
                                 "serving/batching.py needs a new way to pin the batch hold")
    if "wait" not in inspect.getsource(optimizer.__init__):
        raise BentoMLChanged("BentoML's batching Optimizer no longer keeps `wait`; see serving/batching.py")


def pin_no_hold() -> type:
    """Makes every CorkDispatcher built after this call hold no request; returns the
    Optimizer class it installed (idempotent)."""
    check()
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
