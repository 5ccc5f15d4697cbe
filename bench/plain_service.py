"""The peer `bench/serve_throughput.py` measures ours against: a BentoML service
as its docs write one, with default adaptive batching and no tuning, serving the
same SavedModel (PLAIN_SAVED_MODEL), and a no-op endpoint that answers a
constant 28 x 28 JSON list (the ceiling of BentoML's HTTP and JSON path here).
With PLAIN_GUARD=1 the same service runs behind our request guard
(serving/guard.py, with our /generate's bounds: its unbounded inputs give the
guard no schema to derive them from), which prices the guard.

    PLAIN_SAVED_MODEL=<dir> bentoml serve bench.plain_service:Plain
"""
import os

import bentoml
import numpy as np

BLANK = [[0.0] * 28 for _ in range(28)]


@bentoml.service
class Plain:
    def __init__(self) -> None:
        import tensorflow as tf

        self.model = tf.saved_model.load(os.environ["PLAIN_SAVED_MODEL"])

    @bentoml.api(batchable=True)
    def generate(self, z: np.ndarray) -> np.ndarray:
        return self.model.serve(z.astype(np.float32)).numpy()[..., 0]

    @bentoml.api
    def noop(self, z: list) -> list:
        return [BLANK] * len(z)


if os.environ.get("PLAIN_GUARD") == "1":
    from serving.guard import RequestGuard

    LIMIT = 256 * 100  # our /generate at z_dim 100: 256 vectors of 100 numbers
    Plain.add_asgi_middleware(RequestGuard, limits={"/generate": LIMIT, "/noop": LIMIT})
