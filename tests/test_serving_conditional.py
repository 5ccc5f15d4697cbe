"""A conditional generator served over real HTTP: `digit` on every endpoint, per-z
digits in /generate, mixed digits batched together, the 400s naming the field, /info
and the page's digit picker in headless Chromium; a digits generator refusing a
digit; `serving.selection` and `make serve` choosing by kind (MNIST_GAN_KIND); the
conditional pyfunc. The generator is a tiny Keras model whose digit d lights rows
4 + 2d and 5 + 2d of its image, so every answer is checked for the exact digit asked
for. Two real `bentoml serve` processes in all, one per model."""
from __future__ import annotations

import asyncio
import io
import json
import re
import subprocess
import sys

import numpy as np
import pytest
import requests
from PIL import Image

from e2e_util import ROOT, Served, serving_env

pytestmark = pytest.mark.e2e
Z_DIM = 8
CONDITIONAL = "mnist-gan-generator-conditional"

# One process: a conditional and a digits generator exported and stored (their cards from
# pipeline.export.model_card); each logged as the pyfunc with its card and registered,
# then made its registered model's champion; and the conditional champion's pyfunc
# asked for digits 2, 5, 9. Prints one JSON line.
_SETUP = """
import json, sys, tempfile
from pathlib import Path
import keras, mlflow, numpy as np
from mlflow.tracking import MlflowClient
from pipeline.export import PYFUNC_CODE, export_saved_model, model_card
from serving import contract

z_dim = int(sys.argv[1])
# Digit d lights rows 4 + 2d and 5 + 2d (0.75 against -0.75); z moves every pixel by at most 0.25.
pattern = np.full((10, 28, 28), -0.75, np.float32)
for d in range(10):
    pattern[d, 4 + 2 * d:6 + 2 * d] = 0.75
z = keras.Input((z_dim,), name="z")
digit = keras.Input((), dtype="int32", name="digit")
lit = keras.layers.Embedding(10, 784, embeddings_initializer=keras.initializers.Constant(pattern.reshape(10, 784)))(digit)
moved = keras.layers.Dense(784, activation="tanh", kernel_initializer=keras.initializers.RandomNormal(seed=0))(z)
out = keras.layers.Reshape((28, 28, 1))(keras.layers.Add()([lit, keras.layers.Rescaling(0.25)(moved)]))
conditional = keras.Model([z, digit], out)
plain_z = keras.Input((z_dim,), name="z")
plain = keras.Model(plain_z, keras.layers.Reshape((28, 28, 1))(keras.layers.Dense(784, activation="tanh")(plain_z)))

result, client = {}, MlflowClient()
for kind, gen in (("conditional", conditional), ("digits", plain)):
    tmp = Path(tempfile.mkdtemp())
    export_saved_model(gen, tmp / "generator")
    card = model_card(gen, {"run_id": f"run-{kind}"}, {"fcd": 1.0}, {"data_sha256": "0" * 64},
                      {"train.arch": f"test-{kind}", "train.loss": "bce"})
    tag = contract.store(tmp / "generator", card)
    example = np.zeros((1, z_dim), np.float32)
    if card["conditional"]:
        example = {"z": example, "digit": np.zeros((1,), np.int32)}
    with mlflow.start_run() as run:
        info = mlflow.pyfunc.log_model(name="generator", python_model=str(PYFUNC_CODE),
                                       artifacts={contract.SAVED_MODEL: str(tmp / "generator")},
                                       input_example=example, pip_requirements=str(contract.REQUIREMENTS),
                                       registered_model_name=contract.registered_model(kind))
        mlflow.log_dict(card, contract.CARD)
    version = str(info.registered_model_version)
    client.set_model_version_tag(contract.registered_model(kind), version, "bentoml_tag", tag)
    client.set_model_version_tag(contract.registered_model(kind), version, "promotion", f"the test's {kind}")
    client.set_registered_model_alias(contract.registered_model(kind), contract.CHAMPION, version)
    result[kind] = {"tag": tag, "card": card}

model = mlflow.pyfunc.load_model(f"models:/{contract.registered_model('conditional')}@{contract.CHAMPION}")
z = np.random.default_rng(0).standard_normal((3, z_dim)).astype(np.float32)
result["pyfunc"] = model.predict({"z": z, "digit": np.array([2, 5, 9], np.int32)})[..., 0].tolist()
try:
    model.predict({"z": z, "digit": np.array([2, 5], np.int32)})
except Exception as exc:
    result["pyfunc_error"] = str(exc)
print(json.dumps(result))
"""


def digit_of(img: np.ndarray) -> int | None:
    """The digit whose two lit rows the image shows exactly (floats in [0, 1], or a PNG's
    0-255), else None."""
    lit = np.asarray(img, np.float64) / (255 if np.asarray(img).dtype == np.uint8 else 1) > 0.5
    for d in range(10):
        want = np.zeros((28, 28), bool)
        want[4 + 2 * d:6 + 2 * d] = True
        if np.array_equal(lit, want):
            return d
    return None


def tiles(pixels: np.ndarray, n: int) -> list[np.ndarray]:
    """The n 28 x 28 tiles of a grid (ceil(sqrt(n)) columns) or a strip (n columns)."""
    cols = pixels.shape[1] // 28
    return [pixels[28 * (i // cols):28 * (i // cols + 1), 28 * (i % cols):28 * (i % cols + 1)] for i in range(n)]


def _env(tmp) -> dict[str, str]:
    env = serving_env(tmp)
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp / 'mlflow.db'}"
    for key in ("MNIST_GAN_MODEL", "MNIST_GAN_KIND", "MNIST_GAN_REGISTERED_MODEL", "DVC_ROOT", "DVC_EXP_NAME"):
        env.pop(key, None)
    return env


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("conditional")
    env = _env(tmp)
    proc = subprocess.run([sys.executable, "-c", _SETUP, str(Z_DIM)], cwd=tmp, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    setup = json.loads(proc.stdout.strip().splitlines()[-1])
    return tmp, env, setup


def _served(tmp, env, name: str):
    (tmp / name).mkdir()
    with Served(tmp / name, env) as served:
        yield served


@pytest.fixture(scope="module")
def server(home):
    """The conditional champion, chosen as `make serve KIND=conditional` chooses it."""
    tmp, env, _ = home
    yield from _served(tmp, dict(env, MNIST_GAN_KIND="conditional"), "conditional")


@pytest.fixture(scope="module")
def digits_server(home):
    """The newest digits generator, with no kind set."""
    tmp, env, _ = home
    yield from _served(tmp, dict(env, MNIST_GAN_MODEL="latest"), "digits")


def post(server, path, body, **kw):
    return requests.post(f"{server.url}{path}", json=body, timeout=30, **kw)


def png(r) -> np.ndarray:
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(r.content)))


def z_of(seed: int, n: int | None = None) -> list:
    z = np.random.default_rng(seed).standard_normal((n or 1, Z_DIM)).round(6)
    return z.tolist() if n else z[0].tolist()


# 1. The conditional generator ------------------------------------------------------------------

def test_info_says_conditional(server, home):
    _, _, setup = home
    info = requests.get(f"{server.url}/info", timeout=10).json()
    assert info["kind"] == "conditional" and info["conditional"] is True and info["classes"] == list(range(10))
    assert info["digit_input"] == {"name": "digit", "dtype": "int32", "shape": [None]}
    assert info["tag"] == setup["conditional"]["tag"] and info["z_dim"] == Z_DIM
    sel = info["selected"]
    assert sel["by"] == "champion" and sel["kind"] == "conditional" and sel["registered_model"] == CONDITIONAL, sel
    spec = requests.get(f"{server.url}/docs.json", timeout=10).json()
    generate = spec["components"]["schemas"]["GenerateInput"]["properties"]
    assert set(generate) == {"z", "digit"}


def test_generate_draws_the_digit_asked_for(server):
    z = z_of(1, 5)
    one = post(server, "/generate", {"z": z, "digit": 7})
    assert one.status_code == 200, one.text
    assert [digit_of(img) for img in one.json()] == [7] * 5
    each = post(server, "/generate", {"z": z, "digit": [3, 1, 4, 1, 5]})
    assert each.status_code == 200, each.text
    assert [digit_of(img) for img in each.json()] == [3, 1, 4, 1, 5]
    # The same z drawn as another digit differs only where the two digits' rows are.
    a, b = np.asarray(one.json()[1]), np.asarray(each.json()[1])
    assert np.array_equal(np.delete(a, [18, 19, 6, 7], axis=0), np.delete(b, [18, 19, 6, 7], axis=0))
    r = post(server, "/generate", {"z": z, "digit": [0, 9, 0, 9, 0]}, headers={"Accept": "application/x-npy"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-npy", r.text[:200]
    assert [digit_of(img) for img in np.load(io.BytesIO(r.content))] == [0, 9, 0, 9, 0]


def test_render_and_interpolate_draw_the_digit_asked_for(server):
    z0, z1 = z_of(2), z_of(3)
    for d in (0, 6, 9):
        pixels = png(post(server, "/render", {"z": z0, "scale": 2, "digit": d}))
        assert pixels.shape == (56, 56) and digit_of(pixels[::2, ::2]) == d
    strip = png(post(server, "/interpolate", {"z_start": z0, "z_end": z1, "steps": 4, "digit": 2, "method": "slerp"}))
    assert strip.shape == (28, 4 * 28) and [digit_of(t) for t in tiles(strip, 4)] == [2] * 4
    ends = [png(post(server, "/render", {"z": z, "digit": 2})) for z in (z0, z1)]
    assert np.abs(strip[:, :28].astype(int) - ends[0]).max() <= 1
    assert np.abs(strip[:, -28:].astype(int) - ends[1]).max() <= 1
    # /render and /generate draw the same image.
    generated = np.asarray(post(server, "/generate", {"z": [z0], "digit": 6}).json()[0])
    assert np.abs(png(post(server, "/render", {"z": z0, "digit": 6})) - np.rint(generated * 255)).max() <= 1


def test_sample_draws_the_digit_or_every_digit_in_turn(server):
    n = 12
    every = png(post(server, "/sample", {"n": n, "seed": 5}))
    assert every.shape == (3 * 28, 4 * 28)
    assert [digit_of(t) for t in tiles(every, n)] == [i % 10 for i in range(n)]
    fours = png(post(server, "/sample", {"n": n, "seed": 5, "digit": 4}))
    assert [digit_of(t) for t in tiles(fours, n)] == [4] * n
    # The seed draws the same z whatever the digit: tile 4 of the first grid is a 4 already.
    assert np.array_equal(tiles(every, n)[4], tiles(fours, n)[4])
    assert post(server, "/sample", {"n": n, "seed": 5, "digit": 4}).content == \
        post(server, "/sample", {"n": n, "seed": 5, "digit": 4}).content


def _batch_sizes(server) -> tuple[float, float]:
    """/generate's batches so far: (how many, how many held one request)."""
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    lines = [ln for ln in text.splitlines() if ln.startswith("bentoml_service_adaptive_batch_size")
             and 'method_name="generate"' in ln]
    count = sum(float(ln.rsplit(" ", 1)[1]) for ln in lines if "_count" in ln)
    ones = sum(float(ln.rsplit(" ", 1)[1]) for ln in lines if 'le="1.0"' in ln)
    return count, ones


def test_concurrent_requests_batched_together_keep_their_digits(server):
    """32 clients, 600 /generate calls of one to three z, each with its own digits (one for
    all, or one per z): every image is the digit its request asked for, though requests
    were batched together."""
    import aiohttp

    rng = np.random.default_rng(11)
    bodies = []
    for i in range(600):
        n = int(rng.integers(1, 4))
        digit = int(rng.integers(10)) if i % 2 else rng.integers(10, size=n).tolist()
        bodies.append({"z": rng.standard_normal((n, Z_DIM)).round(6).tolist(), "digit": digit})
    results: list = [None] * len(bodies)
    before = _batch_sizes(server)

    async def run() -> None:
        queue = list(range(len(bodies)))
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            async def client() -> None:
                while queue:
                    i = queue.pop()
                    async with session.post(f"{server.url}/generate", json=bodies[i]) as r:
                        results[i] = (r.status, await r.text())
            await asyncio.gather(*(client() for _ in range(32)))

    asyncio.run(asyncio.wait_for(run(), timeout=240))
    errors = [(i, s, t[:200]) for i, (s, t) in enumerate(results) if s != 200]
    assert not errors, (len(errors), errors[:3])
    for body, (_, text) in zip(bodies, results):
        want = body["digit"] if isinstance(body["digit"], list) else [body["digit"]] * len(body["z"])
        assert [digit_of(img) for img in json.loads(text)] == want
    after = _batch_sizes(server)
    batches, single = after[0] - before[0], after[1] - before[1]
    assert 0 < batches < len(bodies) and single < batches, (batches, single)


NOT_CONDITIONAL = "not conditional"
BAD_DIGITS = [
    # (path, body's digit and the rest, text the answer must hold)
    ("/generate", {"digit": 10}, "digit: expected an integer from 0 to 9, got 10"),
    ("/generate", {"digit": -1}, "digit: expected"),
    ("/generate", {"digit": "7"}, 'got \\"7\\"'),
    ("/generate", {"digit": 7.0}, "got 7.0"),
    ("/generate", {"digit": True}, "got true"),
    ("/generate", {"digit": {"d": 1}}, "digit: expected"),
    ("/generate", {"digit": [1, 2]}, "one per z (3), got a list of 2"),
    ("/generate", {"digit": []}, "got a list of 0"),
    ("/generate", {"digit": [1, 2, 3, 4]}, "got a list of 4"),
    ("/generate", {"digit": [1, 2, 10]}, "digit[2]: expected an integer from 0 to 9, got 10"),
    ("/generate", {"digit": [1, "2", 3]}, "digit[1]"),
    ("/generate", {"digit": [1, [2], 3]}, "digit[1]"),
    ("/generate", {}, "digit: this generator is conditional"),
    ("/generate", {"digit": None}, "digit: this generator is conditional"),
    ("/render", {"digit": 10}, "digit: expected"),
    ("/render", {"digit": "3"}, "digit: expected"),
    ("/render", {"digit": 3.0}, "digit: expected"),
    ("/render", {"digit": False}, "digit: expected"),
    ("/render", {"digit": [3]}, "digit: expected"),
    ("/render", {}, "digit: this generator is conditional"),
    ("/sample", {"digit": 10}, "digit: expected"),
    ("/sample", {"digit": [1, 2]}, "digit: expected"),
    ("/sample", {"digit": "any"}, "digit: expected"),
    ("/interpolate", {"digit": -3}, "digit: expected"),
    ("/interpolate", {}, "digit: this generator is conditional"),
]


def _body(path: str, extra: dict) -> dict:
    z = [0.1] * Z_DIM
    base = {"/generate": {"z": [z] * 3}, "/render": {"z": z}, "/sample": {"n": 4},
            "/interpolate": {"z_start": z, "z_end": z}}[path]
    return {**base, **extra}


@pytest.mark.parametrize("path, extra, text", BAD_DIGITS)
def test_bad_digits_are_400_naming_the_field(server, path, extra, text):
    r = post(server, path, _body(path, extra))
    assert r.status_code == 400, (r.status_code, r.text)
    assert text in r.text, r.text
    loc = r.json()["detail"][0]["loc"]
    assert loc[0] == "digit", loc


def test_bad_digits_never_reach_a_batch(server):
    """A bad request among good ones concurrently: only it is refused."""
    from concurrent.futures import ThreadPoolExecutor

    bodies = [{"z": z_of(i, 2), "digit": [i % 10, 10 if i == 5 else 1]} for i in range(12)]
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda b: post(server, "/generate", b), bodies))
    assert [a.status_code for a in answers] == [400 if i == 5 else 200 for i in range(12)]
    assert "digit[1]" in answers[5].text
    assert all([digit_of(img) for img in a.json()] == [i % 10, 1] for i, a in enumerate(answers) if i != 5)


# 2. A digits generator takes no digit ----------------------------------------------------------

def test_a_digits_generator_refuses_a_digit(digits_server, home):
    _, _, setup = home
    info = requests.get(f"{digits_server.url}/info", timeout=10).json()
    assert info["tag"] == setup["digits"]["tag"] and info["selected"]["kind"] == "digits"
    assert info["kind"] == "digits" and info["conditional"] is False and "classes" not in info
    for path in ("/generate", "/render", "/sample", "/interpolate"):
        for digit in (3, [3, 3, 3]):
            r = post(digits_server, path, _body(path, {"digit": digit}))
            assert r.status_code == 400 and NOT_CONDITIONAL in r.text, (path, r.status_code, r.text)
            assert r.json()["detail"][0]["loc"][0] == "digit"
        # Left out, or null, it is served as before.
        assert post(digits_server, path, _body(path, {})).status_code == 200, path
        assert post(digits_server, path, _body(path, {"digit": None})).status_code == 200, path


# 3. The page -----------------------------------------------------------------------------------

def _dom(server, tmp_path, query: str = "") -> str:
    sys.path.insert(0, str(ROOT / "ops"))
    import mlflow_ui

    proc = subprocess.run(
        [mlflow_ui.chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=20000", "--dump-dom",
         f"{server.url}/ui{query}"],
        capture_output=True, text=True, timeout=120)
    assert 'data-rendered="224"' in proc.stdout, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    return proc.stdout


@pytest.mark.chromium
def test_page_picks_a_digit_and_draws_0_to_9(server, tmp_path):
    dom = _dom(server, tmp_path, "?digit=3")
    assert "rendered 224x224, digit 3" in dom
    picker = re.search(r'<p id="digit-pick"[^>]*>', dom).group(0)
    assert "hidden" not in picker
    select = re.search(r'<select id="digit"[^>]*>(.*?)</select>', dom, re.S)
    assert "disabled" not in select.group(0)
    assert re.findall(r"<option[^>]*>([^<]*)</option>", select.group(1)) == ["any"] + [str(d) for d in range(10)]
    assert "hidden" not in re.search(r'<section id="row-section"[^>]*>', dom).group(0)
    assert 'data-drawn="10"' in dom and dom.count('src="blob:') == 3


@pytest.mark.chromium
def test_page_hides_the_picker_from_a_digits_generator(digits_server, tmp_path):
    dom = _dom(digits_server, tmp_path, "?digit=3")
    assert "rendered 224x224<" in dom
    assert re.search(r'<p id="digit-pick" hidden', dom) and re.search(r'<select id="digit" disabled', dom)
    assert re.search(r'<section id="row-section" hidden', dom) and 'data-drawn="0"' in dom
    assert dom.count('src="blob:') == 3


# 4. Which model: selection by kind -------------------------------------------------------------

def _selection(env, *args, **extra) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "serving.selection", *args], cwd=ROOT, env=dict(env, **extra),
                          capture_output=True, text=True, timeout=120)


def test_selection_by_kind(home):
    _, env, setup = home
    cond, digits = setup["conditional"]["tag"], setup["digits"]["tag"]
    proc = _selection(env, MNIST_GAN_KIND="conditional")
    assert proc.returncode == 0, proc.stderr[-2000:]
    line, = proc.stdout.strip().splitlines()
    assert line.startswith(f"serving {cond}: ") and f"alias champion of {CONDITIONAL} -> v1" in line, line
    for selector in ("champion", "latest"):
        proc = _selection(env, "--tag", selector, MNIST_GAN_KIND="conditional")
        assert proc.returncode == 0 and proc.stdout.strip() == cond, (selector, proc.stdout, proc.stderr[-2000:])
        proc = _selection(env, "--tag", selector)  # no kind: digits
        assert proc.returncode == 0 and proc.stdout.strip() == digits, (selector, proc.stdout, proc.stderr[-2000:])
    proc = _selection(env, "latest", MNIST_GAN_KIND="conditional")
    assert proc.stdout.strip() == "serving mnist_gan_generator_conditional:latest: asked for by name: " \
                                  "the newest stored export of kind conditional", proc.stdout


@pytest.mark.parametrize("kind", ["bogus", "Conditional"])
def test_a_bad_kind_is_one_line_naming_the_setting(home, kind):
    _, env, _ = home
    for args in ((), ("latest",), ("--tag", "latest")):
        proc = _selection(env, *args, MNIST_GAN_KIND=kind)
        assert proc.returncode == 1 and proc.stdout == "", (args, proc.stdout)
        line, = proc.stderr.strip().splitlines()
        assert "MNIST_GAN_KIND" in line and repr(kind) in line and "digits, conditional, stacked" in line, line


def test_a_kind_without_a_champion_says_so_and_how_to_serve_another(home):
    _, env, _ = home
    proc = _selection(env, MNIST_GAN_KIND="stacked")
    line, = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and "no champion" in line and "mnist-gan-generator-stacked" in line, line
    assert "make serve KIND=stacked MODEL=latest" in line
    # Another registered model's name keeps its own line of versions, kinds included.
    proc = _selection(env, MNIST_GAN_KIND="conditional", MNIST_GAN_REGISTERED_MODEL="other")
    assert proc.returncode == 1 and "other-conditional" in proc.stderr, proc.stderr


def test_a_conditional_champion_is_copied_from_the_registry(home, tmp_path):
    """A machine whose BentoML store never saw the champion (a team's tracking server):
    the selection copies the registered SavedModel and card in, under the same tag."""
    _, env, setup = home
    env = dict(env, BENTOML_HOME=str(tmp_path / "bentoml"), MNIST_GAN_KIND="conditional")
    proc = _selection(env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "copied from the registry" in proc.stdout and setup["conditional"]["tag"] in proc.stdout
    name, version = setup["conditional"]["tag"].split(":")
    card = json.loads((tmp_path / "bentoml/models" / name / version / "model_card.json").read_text())
    assert card["kind"] == "conditional" and card["conditional"] is True and card["classes"] == list(range(10))


def test_make_serve_passes_kind_on(home):
    for args, env_kind, want in (([], None, "digits"), (["KIND=conditional"], None, "conditional"),
                                 ([], "conditional", "conditional"), (["KIND=stacked"], "conditional", "stacked")):
        env = {k: v for k, v in home[1].items() if k != "MNIST_GAN_KIND"}
        if env_kind:
            env["MNIST_GAN_KIND"] = env_kind
        for target in ("serve", "bento"):
            proc = subprocess.run(["make", "-n", target, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                                  timeout=60)
            assert proc.returncode == 0, proc.stderr
            lines = [ln for ln in proc.stdout.splitlines() if "serving.selection" in ln or "bentoml serve" in ln]
            assert lines and all(f"MNIST_GAN_KIND={want} " in ln for ln in lines), (target, args, env_kind, lines)


# 5. The pyfunc ---------------------------------------------------------------------------------

def test_the_conditional_pyfunc_draws_the_digits_asked_for(home):
    _, _, setup = home
    images = np.asarray(setup["pyfunc"])
    assert images.shape == (3, 28, 28)
    assert [digit_of((img + 1) / 2) for img in images] == [2, 5, 9]
    assert "digit" in setup["pyfunc_error"]
