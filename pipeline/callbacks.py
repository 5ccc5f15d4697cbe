"""Keras callbacks that do the training's side effects: loss history and
MLflow metrics, sample grids from a fixed z."""
from __future__ import annotations

import time
from pathlib import Path

import keras
import numpy as np

from pipeline import images


def _step(model) -> int:
    # The G optimizer's iteration count is the global step (survives restarts).
    return int(model.g_optimizer.iterations.numpy())


class LossHistory(keras.callbacks.Callback):
    """Keeps every step's losses and sends them to MLflow in batches of `every` steps."""

    def __init__(self, every: int, run_id: str | None):
        super().__init__()
        self.every, self.run_id = every, run_id
        self.rows: list[dict] = []
        self._pending: list[dict] = []

    def on_train_batch_end(self, batch, logs=None):
        row = {"step": _step(self.model), **{k: float(v) for k, v in (logs or {}).items()}}
        self.rows.append(row)
        self._pending.append(row)
        if len(self._pending) >= self.every:
            self.flush()

    def on_train_end(self, logs=None):
        self.flush()

    def flush(self):
        if not self._pending or self.run_id is None:
            self._pending = []
            return
        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient

        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, r["step"]) for r in self._pending for k, v in r.items() if k != "step"]
        client = MlflowClient()
        for i in range(0, len(metrics), 1000):  # MLflow's per-call limit
            client.log_batch(self.run_id, metrics=metrics[i:i + 1000])
        self._pending = []

    def to_csv(self, target: str | Path) -> None:
        from pipeline.atomic import write_text

        keys = ["step"] + sorted({k for r in self.rows for k in r} - {"step"})
        lines = [",".join(keys)] + [",".join(f"{r.get(k, '')}" for k in keys) for r in self.rows]
        write_text(target, "\n".join(lines) + "\n")


class SampleGrid(keras.callbacks.Callback):
    """Every `every` steps and at the end: a 4x4 grid from a fixed z, as a PNG
    in `out_dir`, logged to MLflow under `samples/`."""

    def __init__(self, z: np.ndarray, every: int, out_dir: str | Path, run_id: str | None):
        super().__init__()
        self.z, self.every, self.out_dir, self.run_id = z, every, Path(out_dir), run_id
        self.last = -1

    def on_train_batch_end(self, batch, logs=None):
        step = _step(self.model)
        if step % self.every == 0:
            self.write(step)

    def on_train_end(self, logs=None):
        step = _step(self.model)
        if step != self.last:
            self.write(step)

    def write(self, step: int) -> Path:
        pixels = images.to_uint8(self.model.generator(self.z, training=False).numpy())
        path = self.out_dir / f"step_{step:06d}.png"
        images.save_png(images.grid(pixels, cols=4), path, scale=2)
        if self.run_id is not None:
            from mlflow.tracking import MlflowClient

            MlflowClient().log_artifact(self.run_id, str(path), "samples")
        self.last = step
        return path
