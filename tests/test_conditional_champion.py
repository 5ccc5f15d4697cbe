"""Ask for a 7: a conditional generator that passes the gate is promoted in the
conditional registered model (not the digits' one), `make serve KIND=conditional`'s
selection serves it, and `/render` with `digit: 7` returns an image the judge reads
as 7, for every digit.

The generator is one of known truth (real held-out images of the digit asked for),
so that the chain of the real evaluate and
export stages, the registry and a real `bentoml serve` is under test, not a
training's luck; the conditional recipe's own figures are on its results page."""
from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import requests
from PIL import Image

from defaults import evaluate as evaluate_params
from e2e_util import BIN, ROOT, Served, copy_project, env_for, set_params
from pipeline import classifier, data, evaluate
from pipeline.images import from_uint8
from test_evaluate_conditional import QUICK, Z_DIM, unused
from test_evaluate import mnist  # noqa: F401  (fixture: MNIST)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# The train stage's record stands in for a training (the generator is made, not trained);
# then the real evaluate and export stages, as dvc.yaml runs them.
STAGES = f"""
import sys
sys.path.insert(0, {str(ROOT / "tests")!r})
from pipeline import atomic, evaluate, export, params, tracking
from pipeline.errors import run_stage

flat = params.load("train", "params.yaml").flat()
with tracking.training_run(flat) as run:
    atomic.write_json("reports/train/run.json", {{**run.record(), "params": flat}})
run_stage(evaluate.main, ["--generator", "models/generator.keras", "--judge", "models/judge.keras",
                          "--judge-report", "reports/judge.json", "--out", "reports/eval",
                          "--metrics", "reports/metrics.json", "--training-run", "reports/train/run.json",
                          "--run-file", "reports/mlflow_run.json"])
run_stage(export.main, ["--generator", "models/generator.keras", "--metrics", "reports/metrics.json",
                        "--verdict", "reports/eval/verdict.json", "--protocol", "reports/eval/protocol.json",
                        "--data-report", "reports/data.json", "--training-run", "reports/train/run.json",
                        "--run-file", "reports/mlflow_run.json", "--out", "export"])
"""


def draws_the_digit(ds: data.Mnist, p) -> keras.Model:
    """(z, digit) -> a real held-out image of that digit that the evaluation compares
    with nothing, a distinct one for each z of the evaluation's draw (its z[0] picks
    the slot); of standard Keras layers, so the stages load it as any saved generator."""
    keys = np.sort(evaluate.latents(p.num_samples, Z_DIM, p.seed)[:, 0])
    width = len(keys)
    free = unused(ds, p)
    table = np.stack([from_uint8(ds.x_test[free[ds.y_test[free] == d][:width]]) for d in range(10)])
    z, digit = keras.Input((Z_DIM,), name="z"), keras.Input((), dtype="int32", name="digit")
    first = keras.layers.Dense(1, use_bias=False, trainable=False)
    slot = keras.layers.Discretization(bin_boundaries=((keys[1:] + keys[:-1]) / 2).tolist())(first(z))
    one_hots = [keras.layers.Reshape(shape)(keras.layers.CategoryEncoding(n, output_mode="one_hot")(x))
                for x, n, shape in ((digit, 10, (10, 1)), (slot, width, (1, width)))]
    pick = keras.layers.Flatten()(keras.layers.Multiply()(one_hots))  # one-hot of (digit, slot)
    lookup = keras.layers.Dense(28 * 28, use_bias=False, trainable=False)
    model = keras.Model([z, digit], keras.layers.Reshape((28, 28, 1))(lookup(pick)))
    first.set_weights([np.eye(Z_DIM, 1, dtype=np.float32)])
    lookup.set_weights([table.reshape(10 * width, 28 * 28)])
    return model


@pytest.fixture(scope="module")
def exported(mnist, quick_judge, tmp_path_factory):  # noqa: F811
    tmp = tmp_path_factory.mktemp("cond-champion")
    project = copy_project(tmp / "project")
    set_params(project, train={"condition": "concat", "z_dim": Z_DIM, "virtual_labels": 0}, evaluate=QUICK)
    ds = data.Mnist(mnist.x_train[:12000], mnist.y_train[:12000], mnist.x_test, mnist.y_test)
    (project / "data/prepared").mkdir(parents=True)
    data.save_npz(ds, project / "data/prepared/mnist.npz")
    for folder in ("models", "reports/train"):
        (project / folder).mkdir(parents=True, exist_ok=True)
    (project / "reports/data.json").write_text(json.dumps({"data_sha256": data.arrays_sha256(ds)}))
    judge_file, report = quick_judge
    shutil.copy(judge_file, project / "models/judge.keras")
    (project / "reports/judge.json").write_text(json.dumps(report))
    draws_the_digit(ds, evaluate_params(**QUICK)).save(project / "models/generator.keras")
    env = env_for(tmp)
    proc = subprocess.run([sys.executable, "-c", STAGES], cwd=project, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return project, env, proc.stdout


def registry(env: dict):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])


def test_the_conditional_generator_is_champion_of_its_own_kind(exported):
    project, env, out = exported
    assert "mlflow mnist-gan-generator-conditional v1 (now champion: the first version to pass" in out, out
    c = registry(env)
    assert str(c.get_model_version_by_alias("mnist-gan-generator-conditional", "champion").version) == "1"
    assert not c.search_model_versions("name='mnist-gan-generator'")  # the digits' line has nothing
    card = json.loads((project / "export/model_card.json").read_text())
    assert card["kind"] == "conditional" and card["verdict"]["quality_gate_passed"] is True


def test_make_serve_kind_conditional_selects_that_champion(exported):
    project, env, _ = exported
    pick = [str(BIN / "python"), "-m", "serving.selection"]
    chosen = subprocess.run(pick, cwd=project, env={**env, "MNIST_GAN_KIND": "conditional"}, capture_output=True,
                            text=True)
    assert chosen.returncode == 0 and "alias champion of mnist-gan-generator-conditional -> v1" in chosen.stdout
    digits = subprocess.run(pick, cwd=project, env=env, capture_output=True, text=True)
    assert digits.returncode == 1 and "no champion" in digits.stdout + digits.stderr


@pytest.fixture(scope="module")
def served(exported):
    project, env, _ = exported
    with Served(project, {**env, "MNIST_GAN_KIND": "conditional"}) as server:
        yield server, project


def test_render_with_a_digit_draws_what_the_judge_reads_as_that_digit(served):
    server, project = served
    rng = np.random.default_rng(0)
    drawn = []
    for digit in range(10):
        r = requests.post(f"{server.url}/render", json={"z": rng.standard_normal(Z_DIM).tolist(), "digit": digit},
                          timeout=30)
        assert r.status_code == 200 and r.headers["content-type"] == "image/png", r.text
        drawn.append(np.asarray(Image.open(io.BytesIO(r.content))))
    _, probs = classifier.load(project / "models/judge.keras").predict(classifier.to_input(np.stack(drawn)),
                                                                      verbose=0)
    read = probs.argmax(-1)
    assert read[7] == 7 and (read == np.arange(10)).sum() >= 9, read  # the judge misreads about 1 real digit in 50
    info = requests.get(f"{server.url}/info", timeout=30).json()
    assert info["kind"] == "conditional" and info["selected"]["registered_model"] == "mnist-gan-generator-conditional"
