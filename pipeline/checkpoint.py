"""Resumable training state: a tf.train.CheckpointManager folder holding the
weights, both optimizers (their step counts are the global step), the loss
history up to the checkpoint, and the MLflow run it belongs to.

A run resumes only from an unfinished checkpoint whose params fingerprint
matches; anything else starts fresh (the folder is cleared, sample grids
included, and the stopped run's id is kept in `abandoned_run_id`).

Under `train.strategy: multi_worker` the chief's folder is the one checkpoint
(TensorFlow's multi-worker pattern): a save is a collective op, so every
worker saves, but the others into a throwaway folder deleted at once; and to
resume, every worker restores the chief's latest checkpoint. Workers on one
machine read the chief's folder as it is; on several machines `--checkpoints`
must be storage every host mounts at the same path (NFS, a cluster file
system), or the chief's folder copied to each host before a resumed run.
Workers that would start at different steps refuse to train (distribution.agree).
"""
from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import tensorflow as tf

from pipeline import atomic


def fingerprint(train_params: dict, data_path: str | Path) -> str:
    h = hashlib.sha256(json.dumps(train_params, sort_keys=True, default=str).encode())
    with open(data_path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class TrainState:
    def __init__(self, directory: str | Path, gan, fingerprint: str, keep: int = 2, chief: bool = True):
        self.dir = Path(directory)
        # Only the chief writes (or clears) `directory`; the other workers read it.
        self.chief = chief
        self.gan = gan
        self.fingerprint = fingerprint
        parts = dict(generator=gan.generator, discriminator=gan.discriminator,
                     d_optimizer=gan.d_optimizer, g_optimizer=gan.g_optimizer, step=gan.step)
        if gan.ema_generator is not None:
            parts["ema_generator"] = gan.ema_generator
        self.ckpt = tf.train.Checkpoint(**parts)
        self.keep = keep
        self.manager: tf.train.CheckpointManager | None = None
        self.run_id: str | None = None
        # The MLflow run of a stopped run that this one discards instead of resuming.
        self.abandoned_run_id: str | None = None

    def _meta(self) -> dict:
        try:
            return json.loads((self.dir / "meta.json").read_text())
        except (OSError, ValueError):
            return {}

    def restore(self) -> tuple[int, list[dict]] | None:
        """Restore the latest checkpoint of an unfinished run with these params:
        returns (step, history rows up to it), or None after clearing the folder."""
        meta = self._meta()
        latest = tf.train.latest_checkpoint(self.dir) if self.dir.is_dir() else None
        if latest and meta.get("fingerprint") == self.fingerprint and not meta.get("complete"):
            self.ckpt.restore(latest).assert_existing_objects_matched()
            step = int(self.gan.step.numpy())
            rows = [r for r in json.loads((self.dir / "history.json").read_text()) if r["step"] <= step]
            self.run_id = meta.get("run_id")
            if self.chief:
                self._manager()
            return step, rows
        if not self.chief:
            return None
        if not meta.get("complete"):
            self.abandoned_run_id = meta.get("run_id")
        shutil.rmtree(self.dir, ignore_errors=True)
        return None

    def _manager(self) -> tf.train.CheckpointManager:
        if self.manager is None:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.manager = tf.train.CheckpointManager(self.ckpt, str(self.dir), max_to_keep=self.keep)
        return self.manager

    def save(self, step: int, rows: list[dict]) -> None:
        if not self.chief:
            # The same save as the chief's (it is collective), into a folder nobody reads.
            with tempfile.TemporaryDirectory(prefix="train-worker-checkpoint-") as tmp:
                tf.train.CheckpointManager(self.ckpt, tmp, max_to_keep=1).save(checkpoint_number=step)
            return
        # History first: a kill between the two leaves extra rows, which restore drops.
        self._manager()
        atomic.write_json(self.dir / "history.json", rows)
        self.manager.save(checkpoint_number=step)
        self._write_meta(step=step, complete=False)

    def mark_complete(self) -> None:
        if not self.chief:
            return
        meta = self._meta()
        self._write_meta(step=meta.get("step"), complete=True)

    def _write_meta(self, step, complete: bool) -> None:
        atomic.write_json(self.dir / "meta.json", {"fingerprint": self.fingerprint, "run_id": self.run_id,
                                                   "step": step, "complete": complete})
