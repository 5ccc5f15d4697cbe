"""Training in this process: every arch x loss trains, the weight average and the
sample grids are what they say, clipping and the non-finite guard work; and the
helpers the stage's own tests (test_train_stage.py) share."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from defaults import train as train_params
from pipeline import archs, data

rng = np.random.default_rng(0)


def tiny_data(path: Path, n: int = 64) -> Path:
    ds = data.Mnist(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n),
                    rng.integers(0, 256, (8, 28, 28), dtype=np.uint8), rng.integers(0, 10, 8))
    path.mkdir(parents=True, exist_ok=True)
    data.save_npz(ds, path / "mnist.npz")
    return path


def train_cmd(d: Path, params_file: Path | None = None) -> list[str]:
    return [sys.executable, "-m", "pipeline.train", "--params", str(params_file or d / "params.yaml"),
            "--data", str(d / "mnist.npz"), "--model", str(d / "models/generator.keras"),
            "--reports", str(d / "reports/train"), "--checkpoints", str(d / "models/checkpoints"),
            "--run-file", str(d / "reports/run.json")]


def env_for(d: Path) -> dict:
    return {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{d / 'mlflow.db'}", "TF_CPP_MIN_LOG_LEVEL": "2"}


def run_train(d: Path, params_text: str):
    (d / "params.yaml").write_text(params_text)
    return subprocess.run(train_cmd(d), capture_output=True, text=True, env=env_for(d))


def losses_csv(d: Path) -> list[dict]:
    return list(csv.DictReader(open(d / "reports/train/losses.csv")))


def mlflow_client(d: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{d / 'mlflow.db'}")


# Every arch's layers at a fraction of their width, and two critic updates a step: what
# each arch x loss computes, at a test's cost.
SMALL = dict(dcgan={"g_filters": [16, 8, 4, 1], "d_filters": [8, 8, 16, 16]},
             dcgan_upsample={"g_dense_shape": [7, 7, 8], "g_filters": [16, 8, 8, 1], "d_filters": [8, 8, 16, 16]},
             dcgan_paper={"gf": 8, "df": 8},
             losses={"wgan": {"n_critic": 2}, "wgan_gp": {"n_critic": 2}})


@pytest.mark.slow
@pytest.mark.parametrize("arch", archs.NAMES)
def test_every_arch_and_loss_trains(tmp_path, arch):
    from pipeline import losses, train

    x = rng.integers(0, 256, (40, 28, 28), dtype=np.uint8)
    for loss in losses.NAMES:
        p = train_params(arch=arch, loss=loss, steps=2, batch_size=4, z_dim=8, sample_every=2, jit_compile=False,
                         virtual_labels=0, standing_samples=64, **SMALL)
        history = train.fit(train.build(p), p, x, samples=tmp_path / loss, verbose=0)
        assert [r["step"] for r in history.rows] == [1, 2], loss
        last = history.rows[-1]
        assert all(np.isfinite(v) for v in last.values()), (loss, last)
        expected = {"w_estimate"} if losses.REGISTRY[loss].critic else {"d_acc_real", "d_acc_fake"}
        assert expected <= last.keys() and {"d_grad_norm", "g_grad_norm"} <= last.keys()
        assert ("gradient_penalty" in last) == (p.loss_params.gp_weight > 0)


@pytest.mark.slow
@pytest.mark.parametrize("jit", [False, True])
def test_ema_generator_averages_weights_and_is_what_samples(tmp_path, jit):
    from pipeline import train

    p = train_params(arch="mlp", steps=1, batch_size=4, z_dim=8, jit_compile=jit, ema=0.9, virtual_labels=0)
    gan = train.build(p)
    before = gan.generator.get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(before, gan.ema_generator.get_weights()))
    train.fit(gan, p, rng.integers(0, 256, (40, 28, 28), dtype=np.uint8), samples=tmp_path, verbose=0)
    after = gan.generator.get_weights()
    decay = min(0.9, 2 / 11)  # the warm-up at step 1
    for avg, w0, w1 in zip(gan.ema_generator.get_weights(), before, after):
        np.testing.assert_allclose(avg, decay * w0 + (1 - decay) * w1, rtol=1e-5, atol=1e-7)
    assert not all(np.array_equal(a, b) for a, b in zip(after, gan.ema_generator.get_weights()))
    assert gan.sampler is gan.ema_generator
    z = np.ones((2, 8), np.float32)
    np.testing.assert_array_equal(gan(z).numpy(), gan.ema_generator(z, training=False).numpy())


def test_sample_grid_shows_the_generator_as_it_would_be_saved(tmp_path):
    from PIL import Image

    from pipeline import images, train
    from pipeline.gan import standing_statistics

    p = train_params(arch="mlp", steps=3, batch_size=8, z_dim=8, ema=0.9, sample_every=3, jit_compile=False, standing_samples=64,
                     virtual_labels=0)
    gan = train.build(p)
    train.fit(gan, p, rng.integers(0, 256, (64, 28, 28), dtype=np.uint8), samples=tmp_path / "samples", verbose=0)
    z = train.fixed_z(p)
    settled = standing_statistics(gan.sampler, p.seed, samples=p.standing_samples)
    want = images.to_uint8(settled(z, training=False).numpy())[:16]
    running = images.to_uint8(gan.sampler(z, training=False).numpy())[:16]
    assert not np.array_equal(want, running)  # the moving statistics would show something else
    images.save_png(images.grid(want, cols=4), tmp_path / "want.png", scale=2)
    got = np.asarray(Image.open(tmp_path / "samples" / "step_000003.png"))
    np.testing.assert_array_equal(got, np.asarray(Image.open(tmp_path / "want.png")))


def test_wgan_clips_critic_weights(tmp_path):
    from pipeline import train

    p = train_params(arch="mlp", loss="wgan", steps=2, batch_size=4, z_dim=8, jit_compile=False, virtual_labels=0)
    gan = train.build(p)
    train.fit(gan, p, rng.integers(0, 256, (40, 28, 28), dtype=np.uint8), samples=tmp_path, verbose=0)
    clip = p.loss_params.clip
    assert clip and max(float(np.abs(w).max()) for w in gan.discriminator.get_weights()) <= clip + 1e-7


class Poison:
    """A discriminator wrapper whose output turns NaN from its `after`-th training call on:
    a real model with a known fault, to exercise the non-finite guard."""

    @staticmethod
    def wrap(discriminator, after: int):
        import keras
        import tensorflow as tf

        class PoisonLayer(keras.layers.Layer):
            def build(self, shape):
                self.calls = self.add_weight(shape=(), initializer="zeros", trainable=False, name="calls")

            def call(self, x, training=False):
                if training:
                    self.calls.assign_add(1.0)
                # A factor, not tf.where on x: where's unselected branch would poison gradients early.
                return x * tf.where(self.calls > after, float("nan"), 1.0)

        img = keras.Input((28, 28, 1))
        return keras.Model(img, PoisonLayer()(discriminator(img)), name="discriminator")


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_nan_stops_with_step_and_keeps_last_good_checkpoint(tmp_path, precision):
    import tensorflow as tf

    from pipeline import train
    from pipeline.checkpoint import TrainState
    from pipeline.errors import StageError

    p = train_params(arch="mlp", steps=20, batch_size=4, z_dim=8, checkpoint_every=3, jit_compile=False,
                     precision=precision, virtual_labels=0)
    gan = train.build(p)
    # bce calls D twice a step (real and fake in one joint pass, then G's fake), three
    # times without the joint pass: NaN appears in step 8.
    gan.discriminator = Poison.wrap(gan.discriminator, after=(2 if gan.d_joint else 3) * 7)
    state = TrainState(tmp_path / "ckpt", gan, "fp")
    state.run_id = None
    with pytest.raises(StageError, match=r"NaN or inf at step 8; the last good checkpoint \(step 6\) is kept"):
        train.fit(gan, p, rng.integers(0, 256, (40, 28, 28), dtype=np.uint8), samples=tmp_path, state=state,
                  verbose=0)
    meta = json.loads((tmp_path / "ckpt/meta.json").read_text())
    assert meta["step"] == 6 and not meta["complete"]
    values = [tf.train.load_variable(str(tmp_path / "ckpt/ckpt-6"), name)
              for name, _ in tf.train.list_variables(str(tmp_path / "ckpt/ckpt-6"))]
    assert all(np.all(np.isfinite(v)) for v in values if np.issubdtype(np.asarray(v).dtype, np.floating))
    assert [r["step"] for r in json.loads((tmp_path / "ckpt/history.json").read_text())] == list(range(1, 7))


@pytest.mark.parametrize("uri, shown", [
    ("http://alice:s3cret@mlflow.example:5000/", "http://mlflow.example:5000/"),
    ("https://token@host/path?sig=abc", "https://host/path"),
    ("sqlite:////data/mlflow.db", "sqlite:////data/mlflow.db"),
])
def test_run_records_never_hold_credentials(monkeypatch, uri, shown):
    from pipeline import tracking

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert tracking.Run("r", "1", "n").record()["tracking_uri"] == shown
