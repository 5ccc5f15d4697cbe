"""Keras callbacks that do the training's side effects: the non-finite guard,
the per-step history and its MLflow metrics, sample grids from a fixed z with
the collapse watch, checkpoints, and progress lines for logs."""
from __future__ import annotations

import math
import time
from pathlib import Path

import keras
import numpy as np

from pipeline import images


def global_step(model) -> int:
    # The GAN's own step counter (restored with checkpoints), not G's optimizer iterations,
    # which advance train.g_steps times a step.
    return int(model.step.numpy())


def _log_metrics(run, points: list[tuple[str, float, int]]) -> None:
    if run is not None and points:
        run.log_metrics(points)


class NonFiniteGuard(keras.callbacks.Callback):
    """Stops training at the first step whose logs hold a NaN or inf."""

    def __init__(self):
        super().__init__()
        self.bad_step: int | None = None
        self.bad_keys: list[str] = []

    def on_train_batch_end(self, batch, logs=None):
        bad = [k for k, v in (logs or {}).items() if not math.isfinite(float(v))]
        if bad and self.bad_step is None:
            self.bad_step, self.bad_keys = global_step(self.model), bad
            self.model.stop_training = True


class History(keras.callbacks.Callback):
    """Keeps every step's logs; sends them to the run (a tracking.Run, or None)
    every `every` steps with the oscillation index (std of g_loss over the
    trailing `window` steps).

    Steps at or below `logged_through` are already in the MLflow run (a resumed
    run replays them from its checkpoint) and are not sent again."""

    def __init__(self, every: int, window: int, run, rows: list[dict] | None = None,
                 logged_through: int = 0):
        super().__init__()
        self.every, self.window, self.run = every, window, run
        self.rows: list[dict] = list(rows or [])
        self.logged_through = logged_through
        self._pending: list[tuple[str, float, int]] = []

    def on_train_batch_end(self, batch, logs=None):
        step = global_step(self.model)
        row = {"step": step, **{k: float(v) for k, v in (logs or {}).items()}}
        self.rows.append(row)
        if step <= self.logged_through:
            return
        self._pending += [(k, v, step) for k, v in row.items() if k != "step" and math.isfinite(v)]
        if step % self.every == 0:
            g = [r["g_loss"] for r in self.rows[-self.window:]]
            if len(g) >= 2:
                self._pending.append(("g_loss_oscillation", float(np.std(g)), step))
            self.flush()

    def on_train_end(self, logs=None):
        self.flush()

    def flush(self):
        _log_metrics(self.run, self._pending)
        self._pending = []

    def to_csv(self, target: str | Path) -> None:
        from pipeline.atomic import write_text

        keys = ["step"] + sorted({k for r in self.rows for k in r} - {"step"})
        lines = [",".join(keys)] + [",".join(f"{r.get(k, '')}" for k in keys) for r in self.rows]
        write_text(target, "\n".join(lines) + "\n")


class SampleGrid(keras.callbacks.Callback):
    """Every `every` steps and at the end: a 4x4 grid of the first 16 fixed-z
    samples as `step_NNNNNN.png` in `out_dir`, logged to MLflow under `samples/`,
    and the collapse watch: mean pairwise L1 over all fixed-z samples. The
    samples come from the generator as it would be saved at that step: the
    weight average with standing BatchNorm statistics over `standing_samples` draws."""

    def __init__(self, z: np.ndarray, every: int, out_dir: str | Path, run, standing_samples: int,
                 digits: np.ndarray | None = None):
        super().__init__()
        self.z, self.every, self.out_dir, self.run = z, every, Path(out_dir), run
        self.standing_samples = standing_samples
        self.digits = digits  # a conditional generator's digit beside each z
        self.last = -1

    def on_train_batch_end(self, batch, logs=None):
        step = global_step(self.model)
        if step % self.every == 0:
            self.write(step)

    def on_train_end(self, logs=None):
        step = global_step(self.model)
        if step != self.last and not self.model.stop_training:
            self.write(step)

    def write(self, step: int) -> Path:
        from pipeline.metrics import mean_pairwise_l1

        from pipeline.gan import float32_copy, standing_statistics
        from pipeline.models import generate

        sampler = standing_statistics(float32_copy(self.model.sampler), self.model.noise_seed,
                                      samples=self.standing_samples)
        pixels = images.to_uint8(generate(sampler, self.z, self.digits))
        path = self.out_dir / f"step_{step:06d}.png"
        images.save_png(images.grid(pixels[:16], cols=4), path, scale=2)
        _log_metrics(self.run, [("sample_pairwise_l1", mean_pairwise_l1(pixels), step)])
        if self.run is not None:
            self.run.log_artifact(path, "samples")
        self.last = step
        return path


class Checkpoint(keras.callbacks.Callback):
    """Every `every` steps and at the end, unless a non-finite value was seen:
    MLflow metrics flushed, then the training state saved."""

    def __init__(self, state, every: int, history: History, guard: NonFiniteGuard):
        super().__init__()
        self.state, self.every, self.history, self.guard = state, every, history, guard
        self.last = -1

    def _save(self):
        step = global_step(self.model)
        if self.guard.bad_step is None and step != self.last:
            self.history.flush()
            self.state.save(step, self.history.rows)
            self.last = step

    def on_train_batch_end(self, batch, logs=None):
        if global_step(self.model) % self.every == 0:
            self._save()

    def on_train_end(self, logs=None):
        self._save()


class ProgressLine(keras.callbacks.Callback):
    """One line every `every` steps and at the end, for logs that are not a terminal
    (where Keras' progress bar would write a redraw per step): the step, the losses
    and the pace."""

    def __init__(self, every: int, steps: int):
        super().__init__()
        self.every, self.steps = every, steps
        self._since: tuple[float, int] | None = None
        self._logs: dict = {}

    def on_train_begin(self, logs=None):
        self._since = (time.monotonic(), global_step(self.model))

    def on_train_batch_end(self, batch, logs=None):
        self._logs = logs or {}
        step = global_step(self.model)
        if step % self.every == 0 and step != self.steps:
            self.print(step)

    def on_train_end(self, logs=None):
        self.print(global_step(self.model))

    def print(self, step: int) -> None:
        t0, s0 = self._since
        elapsed = time.monotonic() - t0
        pace = (step - s0) / elapsed if elapsed > 0 else 0.0
        left = f", {(self.steps - step) / pace / 60:.1f} min left" if pace and step < self.steps else ""
        losses = " ".join(f"{k}={float(v):.4g}" for k, v in self._logs.items() if k in ("d_loss", "g_loss"))
        print(f"train: step {step}/{self.steps} {losses} ({pace:.1f} steps/s{left})", flush=True)
