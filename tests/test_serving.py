"""The served generator over real HTTP: every endpoint's contract, the input
bounds, a fuzz set from the OpenAPI spec, a 32-client load test against
in-process inference, a z_dim-64 model served from its card alone, the page
in headless Chromium, and `bentoml build`. Each server is a real
`bentoml serve` on a free loopback port with a temp BENTOML_HOME."""
from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import yaml
from PIL import Image

from e2e_util import ROOT, BIN, Served, serving_env, store_generator
from serving import contract

sys.path.insert(0, str(ROOT / "ops"))
import serving_lock  # noqa: E402

pytestmark = pytest.mark.e2e
Z_DIM = 24
VERDICT = {"mode_collapse": False, "memorization": False, "quality_gate_passed": True, "reasons": []}


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serving")
    env = serving_env(tmp)
    tag = store_generator(env, "mlp", Z_DIM, verdict=VERDICT, mlflow_run_id="run-24")
    return tmp, env, tag


@pytest.fixture(scope="module")
def server(home):
    tmp, env, tag = home
    with Served(tmp, dict(env, MNIST_GAN_MODEL=tag)) as served:
        yield served


@pytest.fixture(scope="module")
def reference(home):
    """In-process inference on the stored SavedModel, as the service should compute it."""
    import tensorflow as tf

    tmp, _, tag = home
    name, version = tag.split(":")
    model = tf.saved_model.load(str(tmp / "bentoml/models" / name / version / "saved_model"))
    return lambda z: np.clip((model.serve(np.asarray(z, np.float32)).numpy()[..., 0] + 1) / 2, 0, 1)


def post(server, path, body, **kw):
    return requests.post(f"{server.url}{path}", json=body, timeout=30, **kw)


def png(r) -> np.ndarray:
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    img = Image.open(io.BytesIO(r.content))
    assert img.mode == "L"
    return np.asarray(img)


def z_of(seed: int, n: int | None = None, dim: int = Z_DIM) -> list:
    z = np.random.default_rng(seed).standard_normal((n or 1, dim)).round(6)
    return z.tolist() if n else z[0].tolist()


def test_generate_equals_in_process(server, reference):
    z = z_of(1, 5)
    r = post(server, "/generate", {"z": z})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    got = np.asarray(r.json())
    assert got.shape == (5, 28, 28) and 0 <= got.min() and got.max() <= 1
    np.testing.assert_allclose(got, reference(z), atol=1e-5)


def test_generate_answers_npy_when_asked(server, reference):
    z = z_of(5, 7)
    r = post(server, "/generate", {"z": z}, headers={"Accept": "application/x-npy"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-npy", r.text[:200]
    got = np.load(io.BytesIO(r.content), allow_pickle=False)
    assert got.dtype == np.float32 and got.shape == (7, 28, 28)
    np.testing.assert_allclose(got, reference(z), atol=1e-5)
    as_json = np.asarray(post(server, "/generate", {"z": z}).json())
    np.testing.assert_allclose(got, as_json, atol=1e-6)
    # Among other types, with parameters; q=0 refuses it; JSON stays the default.
    r = post(server, "/generate", {"z": z}, headers={"Accept": "text/html, application/x-npy;q=0.9"})
    assert r.headers["content-type"] == "application/x-npy"
    r = post(server, "/generate", {"z": z}, headers={"Accept": "application/x-npy;q=0, application/json"})
    assert r.headers["content-type"] == "application/json"
    # Errors stay JSON naming the field; other routes keep their own answer.
    r = post(server, "/generate", {"z": [GOOD[:-1]]}, headers={"Accept": "application/x-npy"})
    assert r.status_code == 400 and r.headers["content-type"] == "application/json" and "z_dim" in r.text
    assert png(post(server, "/render", {"z": z[0]}, headers={"Accept": "application/x-npy"})).shape == (28, 28)


@pytest.mark.parametrize("scale", [1, 3, 16])
def test_render_scales_nearest_neighbour(server, reference, scale):
    z = z_of(2)
    pixels = png(post(server, "/render", {"z": z, "scale": scale}))
    assert pixels.shape == (28 * scale, 28 * scale)
    expected = np.rint(reference([z])[0] * 255)
    assert np.abs(pixels[::scale, ::scale] - expected).max() <= 1
    # Nearest-neighbour: every scale x scale block is one value.
    blocks = pixels.reshape(28, scale, 28, scale)
    assert (blocks == blocks[:, :1, :, :1]).all()


def test_sample_is_a_seeded_grid(server):
    a = post(server, "/sample", {"n": 5, "seed": 7})
    b = post(server, "/sample", {"n": 5, "seed": 7})
    c = post(server, "/sample", {"n": 5, "seed": 8})
    grid = png(a)
    assert grid.shape == (2 * 28, 3 * 28)          # 3 columns, 2 rows
    assert (grid[28:, 56:] == 0).all()              # the sixth tile is empty
    assert a.content == b.content and not np.array_equal(grid, png(c))
    assert png(post(server, "/sample", {"n": 64, "seed": 0})).shape == (8 * 28, 8 * 28)


@pytest.mark.parametrize("method", ["linear", "slerp"])
def test_interpolate_strip_runs_from_start_to_end(server, method):
    z0, z1 = z_of(3), z_of(4)
    strip = png(post(server, "/interpolate", {"z_start": z0, "z_end": z1, "steps": 5, "method": method}))
    assert strip.shape == (28, 5 * 28)
    first, last = png(post(server, "/render", {"z": z0})), png(post(server, "/render", {"z": z1}))
    assert np.abs(strip[:, :28].astype(int) - first).max() <= 1
    assert np.abs(strip[:, -28:].astype(int) - last).max() <= 1
    assert not np.array_equal(strip[:, 28:56], strip[:, :28])


def test_slerp_frames_stay_within_the_z_bound(server, reference):
    # Orthogonal vectors at the bound: slerp's midpoint has components of 10 * sqrt(2).
    a = [10.0] * Z_DIM
    b = [10.0] * (Z_DIM // 2) + [-10.0] * (Z_DIM - Z_DIM // 2)
    strip = png(post(server, "/interpolate", {"z_start": a, "z_end": b, "steps": 3, "method": "slerp"}))
    a_, b_ = np.asarray(a), np.asarray(b)
    mid = (a_ + b_) * np.sin(np.pi / 4) / np.sin(np.pi / 2)
    assert np.abs(mid).max() > 14
    clipped, unclipped = reference([np.clip(mid, -10, 10)])[0], reference([mid])[0]
    assert np.abs(clipped - unclipped).max() > 2 / 255, "this generator cannot tell the two apart"
    assert np.abs(strip[:, 28:56].astype(int) - np.rint(clipped * 255)).max() <= 1


def test_info_is_the_model_card(server, home):
    info = requests.get(f"{server.url}/info", timeout=10).json()
    assert info["tag"] == home[2] and info["mlflow_run_id"] == "run-24"
    assert info["z_dim"] == Z_DIM and info["arch"] == "mlp" and info["metrics"] == {"diversity_ratio": 0.9}
    assert info["verdict"] == VERDICT


def test_health_metrics_openapi(server):
    for path in ("/livez", "/readyz"):
        assert requests.get(f"{server.url}{path}", timeout=10).status_code == 200
    metrics = requests.get(f"{server.url}/metrics", timeout=10).text
    assert "bentoml_service_request_total" in metrics and 'endpoint="/generate"' in metrics
    paths = requests.get(f"{server.url}/docs.json", timeout=10).json()["paths"]
    assert {"/generate", "/render", "/sample", "/interpolate"} <= set(paths)


NAN_BODY = '{"z": [[NaN' + ", 0" * (Z_DIM - 1) + "]]}"
INF_BODY = '{"z": [' + "0, " * (Z_DIM - 1) + "Infinity]}"
GOOD = [0.0] * Z_DIM
BAD = [
    # (path, body: dict or raw JSON text, status, text the answer must hold)
    ("/generate", {"z": [GOOD[:-1]]}, 400, "z"),
    ("/generate", {"z": [GOOD, GOOD[:-1]]}, 400, "z[1]"),
    ("/generate", {"z": [GOOD + [0.0]]}, 400, "z"),
    ("/render", {"z": GOOD[:5]}, 400, "z"),
    ("/generate", NAN_BODY, 400, "finite"),
    ("/render", INF_BODY, 400, "finite"),
    ("/render", {"z": [11.0] + GOOD[1:]}, 400, "less than or equal to 10"),
    ("/render", {"z": [-10.5] + GOOD[1:]}, 400, "greater than or equal to -10"),
    ("/render", {"z": ["0.5"] + GOOD[1:]}, 400, "valid number"),
    ("/render", {"z": [True] + GOOD[1:]}, 400, "valid number"),
    ("/render", {"z": [None] + GOOD[1:]}, 400, "z"),
    ("/generate", {"z": [[GOOD]]}, 400, "z"),
    ("/generate", {"z": GOOD}, 400, "z"),
    ("/render", {"z": [GOOD]}, 400, "z"),
    ("/generate", {"z": []}, 400, "z"),
    ("/generate", {"z": [[]]}, 400, "z"),
    ("/generate", {"z": [GOOD] * 257}, 400, "z"),
    ("/generate", {}, 400, "z"),
    ("/render", {"w": GOOD}, 400, "z"),
    ("/render", {"z": GOOD, "scale": 0}, 400, "scale"),
    ("/render", {"z": GOOD, "scale": 17}, 400, "scale"),
    ("/render", {"z": GOOD, "scale": 2.5}, 400, "scale"),
    ("/sample", {"n": 0}, 400, "n"),
    ("/sample", {"n": 65}, 400, "n"),
    ("/sample", {"n": 4, "seed": -1}, 400, "seed"),
    ("/sample", {"n": 4, "seed": "x"}, 400, "seed"),
    ("/interpolate", {"z_start": GOOD, "z_end": GOOD, "steps": 1}, 400, "steps"),
    ("/interpolate", {"z_start": GOOD, "z_end": GOOD, "steps": 33}, 400, "steps"),
    ("/interpolate", {"z_start": GOOD, "z_end": GOOD, "method": "cubic"}, 400, "method"),
    ("/interpolate", {"z_start": GOOD, "z_end": GOOD[:3]}, 400, "z_end"),
    ("/interpolate", {"z_end": GOOD}, 400, "z_start"),
    ("/generate", '{"z": [[0, 1', 400, "json"),
    ("/generate", "", 400, "z"),
    ("/generate", "[1, 2]", 400, ""),
    ("/generate", "null", 400, ""),
]


@pytest.mark.parametrize("path, body, status, text", BAD)
def test_malformed_input_is_4xx_naming_the_field(server, path, body, status, text):
    if isinstance(body, str):
        r = requests.post(f"{server.url}{path}", data=body, headers={"Content-Type": "application/json"}, timeout=30)
    else:
        r = post(server, path, body)
    assert r.status_code == status, (r.status_code, r.text)
    assert text.lower() in r.text.lower()


def test_transport_errors_are_4xx(server):
    body = json.dumps({"z": GOOD})
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        r = requests.post(f"{server.url}/render", data=body, headers={"Content-Type": ctype}, timeout=30)
        assert r.status_code == 415 and "content-type" in r.text, (ctype, r.status_code, r.text)
    r = requests.post(f"{server.url}/render", data=body)  # no content type at all
    assert r.status_code == 415
    big = b'{"z": [' + b"0.0, " * (1 << 20) + b"0.0]}"
    r = requests.post(f"{server.url}/generate", data=big, headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 413 and "body" in r.text
    # Without a Content-Length (chunked), the bound holds too.
    r = requests.post(f"{server.url}/generate", data=iter([big[:3 << 20], big[3 << 20:]]),
                      headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 413
    assert requests.get(f"{server.url}/generate", timeout=10).status_code == 405
    assert requests.get(f"{server.url}/readyz", timeout=10).status_code == 200


def test_docs_python_client_example_runs(server, tmp_path):
    """docs/serving.md's bentoml.SyncHTTPClient block, run as written against a real server
    (its URL and z_dim swapped for this one's)."""
    import re
    import sys

    page = (ROOT / "docs/serving.md").read_text()
    block = re.search(r"<!-- client-example:.*?-->\n```python\n(.*?)```", page, re.S).group(1)
    assert "http://127.0.0.1:3000" in block and "(4, 100)" in block
    code = block.replace("http://127.0.0.1:3000", server.url).replace("(4, 100)", f"(4, {Z_DIM})")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["(4,", "28,", "28)", "(224,", "224)", "(112,", "112)"], proc.stdout
    assert Image.open(tmp_path / "digit.png").size == (224, 224)


def post_paths(server) -> set[str]:
    """The service's POST routes as its own OpenAPI spec lists them."""
    paths = requests.get(f"{server.url}/docs.json", timeout=10).json()["paths"]
    return {p for p, ops in paths.items() if "post" in ops}


def test_every_post_route_is_guarded(server):
    bounds = requests.get(f"{server.url}/info", timeout=10).json()["bounds"]["max_body_bytes"]
    assert set(bounds) == post_paths(server) >= {"/generate", "/render", "/sample", "/interpolate"}
    for path, limit in bounds.items():
        r = requests.post(f"{server.url}{path}", data="{}", headers={"Content-Type": "text/plain"}, timeout=30)
        assert r.status_code == 415, (path, r.status_code)
        over = b'{"x": "' + b"a" * limit + b'"}'
        r = requests.post(f"{server.url}{path}", data=over, headers={"Content-Type": "application/json"}, timeout=30)
        assert r.status_code == 413 and "body" in r.text, (path, r.status_code, r.text)


def test_hostile_bodies_are_refused_before_they_are_parsed(server):
    """The body cap follows the largest valid request, and a body within it that holds
    more values than any valid one (a long run of zeros inside one z) is refused."""
    json_ = {"Content-Type": "application/json"}
    bounds = requests.get(f"{server.url}/info", timeout=10).json()["bounds"]["max_body_bytes"]
    two_million = b'{"z": [[' + b"0," * 1_999_999 + b'0]]}'
    r = requests.post(f"{server.url}/generate", data=two_million, headers=json_, timeout=30)
    assert r.status_code == 413 and "body" in r.text
    for path, field in (("/generate", b'{"z": [['), ("/render", b'{"z": ['), ("/interpolate", b'{"z_start": [')):
        n = (bounds[path] - 64) // 2  # "0," pairs that fit under the byte cap
        closing = b"]]}" if path == "/generate" else b"]}"
        body = field + b"0," * n + b"0" + closing
        assert len(body) <= bounds[path]
        r = requests.post(f"{server.url}{path}", data=body, headers=json_, timeout=30)
        assert r.status_code == 413 and "values" in r.text, (path, r.status_code, r.text)
    # The largest valid request, with every number at full float64 length, is served.
    z = (np.random.default_rng(0).uniform(-1, 1, (256, Z_DIM)) * (1 - 1e-16)).tolist()
    body = json.dumps({"z": z}).encode()
    assert len(body) > 256 * Z_DIM * 18
    r = requests.post(f"{server.url}/generate", data=body, headers=json_, timeout=60)
    assert r.status_code == 200 and len(r.json()) == 256
    assert requests.get(f"{server.url}/readyz", timeout=10).status_code == 200


def test_fuzz_from_openapi_is_always_4xx(server):
    """Schema-violating requests generated by schemathesis from the service's
    own OpenAPI spec: each one is refused with a 4xx, none crashes the server."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_url(f"{server.url}/docs.json")
    statuses: dict[str, list[int]] = {}
    for result in schema.get_all_operations():
        op = result.ok()
        if op.method.upper() != "POST" or op.path not in {"/generate", "/render", "/sample", "/interpolate"}:
            continue
        seen = statuses.setdefault(op.path, [])

        @settings(max_examples=40, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(case=op.as_strategy(generation_mode=GenerationMode.NEGATIVE))
        def check(case):
            r = case.call(base_url=server.url, timeout=30)
            seen.append(r.status_code)
            assert 400 <= r.status_code < 500, (case.body, r.status_code, r.text[:300])

        check()
    assert set(statuses) == {"/generate", "/render", "/sample", "/interpolate"}
    assert all(len(s) >= 10 for s in statuses.values()), {k: len(v) for k, v in statuses.items()}
    assert requests.get(f"{server.url}/readyz", timeout=10).status_code == 200


def test_load_32_clients_2000_requests(server, reference):
    """32 concurrent clients, 2,000 /generate calls (one to three z each):
    no errors, and every image equals in-process inference within 1e-5."""
    import aiohttp

    rng = np.random.default_rng(5)
    bodies = [rng.standard_normal((int(rng.integers(1, 4)), Z_DIM)).round(6) for _ in range(2000)]
    results: list = [None] * len(bodies)

    async def run() -> None:
        queue = list(range(len(bodies)))
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            async def client() -> None:
                while queue:
                    i = queue.pop()
                    async with session.post(f"{server.url}/generate", json={"z": bodies[i].tolist()}) as r:
                        results[i] = (r.status, await r.text())
            await asyncio.gather(*(client() for _ in range(32)))

    t0 = time.monotonic()
    asyncio.run(asyncio.wait_for(run(), timeout=300))
    errors = [(i, s, t[:200]) for i, (s, t) in enumerate(results) if s != 200]
    assert not errors, (len(errors), errors[:3])
    got = np.concatenate([np.asarray(json.loads(t)) for _, t in results])
    np.testing.assert_allclose(got, reference(np.concatenate(bodies)), atol=1e-5)
    assert time.monotonic() - t0 < 300
    assert requests.get(f"{server.url}/readyz", timeout=10).status_code == 200


def test_z_dim_64_served_from_the_card_alone(home):
    """Another generator (z_dim 64, no verdict in its card) with the same code."""
    tmp, env, _ = home
    tag = store_generator(env, "mlp", 64, verdict=None)
    served = Served(tmp, dict(env, MNIST_GAN_MODEL=tag))
    try:
        served.wait_ready()
        info = requests.get(f"{served.url}/info", timeout=10).json()
        assert info["z_dim"] == 64 and info["tag"] == tag and "verdict" not in info
        r = post(served, "/generate", {"z": z_of(9, 2, 64)})
        assert r.status_code == 200 and np.asarray(r.json()).shape == (2, 28, 28)
        assert png(post(served, "/render", {"z": z_of(9, dim=64), "scale": 2})).shape == (56, 56)
        r = post(served, "/generate", {"z": z_of(9, 1, Z_DIM)})
        assert r.status_code == 400 and "expected 64" in r.text
    finally:
        served.stop()


def test_api_routes_are_traced_only_when_traces_are_sampled(home):
    """BentoML's default keeps no trace; the service then leaves its API routes out of
    OpenTelemetry's middleware (their access-log lines carry no trace id, /info's does).
    With a sample rate they are traced as configured."""
    tmp, env, tag = home
    for options, traced in (("", False), ("tracing.sample_rate=1.0", True)):
        served = Served(tmp, dict(env, MNIST_GAN_MODEL=tag, MNIST_GAN_ACCESS_LOG="1",
                                  BENTOML_CONFIG_OPTIONS=options))
        try:
            served.wait_ready()
            assert post(served, "/generate", {"z": z_of(4, 1)}).status_code == 200
            assert post(served, "/render", {"z": z_of(4)}).status_code == 200
            assert requests.get(f"{served.url}/info", timeout=10).status_code == 200
            deadline = time.monotonic() + 10
            while "path=/info" not in served.output() and time.monotonic() < deadline:
                time.sleep(0.2)
            lines = {path: [ln for ln in served.output().splitlines() if f"path={path}," in ln]
                     for path in ("/generate", "/render", "/info")}
            assert all(len(v) == 1 for v in lines.values()), lines
            assert "trace=" in lines["/info"][0], lines
            assert ("trace=" in lines["/generate"][0]) is traced, (options, lines)
            assert ("trace=" in lines["/render"][0]) is traced, (options, lines)
        finally:
            served.stop()


def test_a_three_channel_generator_draws_rgb(home):
    """A Stacked MNIST generator (28 x 28 x 3, the card says so): every endpoint answers
    in three channels, the same numbers as in-process inference."""
    import tensorflow as tf

    tmp, env, _ = home
    tag = store_generator(env, "dcgan_paper", Z_DIM, channels=3)
    name, version = tag.split(":")
    model = tf.saved_model.load(str(tmp / "bentoml/models" / name / version / "saved_model"))
    served = Served(tmp, dict(env, MNIST_GAN_MODEL=tag))
    try:
        served.wait_ready()
        assert requests.get(f"{served.url}/info", timeout=10).json()["output"]["shape"] == [None, 28, 28, 3]
        z = z_of(3, 2)
        r = post(served, "/generate", {"z": z})
        assert r.status_code == 200
        want = np.clip((model.serve(np.asarray(z, np.float32)).numpy() + 1) / 2, 0, 1)
        np.testing.assert_allclose(np.asarray(r.json()), want, atol=1e-5)
        r = post(served, "/generate", {"z": z}, headers={"Accept": "application/x-npy"})
        assert r.status_code == 200 and np.load(io.BytesIO(r.content)).shape == (2, 28, 28, 3)
        for path, body, shape in (("/render", {"z": z[0], "scale": 2}, (56, 56, 3)),
                                  ("/sample", {"n": 5, "seed": 1}, (56, 84, 3)),
                                  ("/interpolate", {"z_start": z[0], "z_end": z[1], "steps": 3}, (28, 84, 3))):
            r = post(served, path, body)
            assert r.status_code == 200 and r.headers["content-type"] == "image/png", (path, r.text)
            img = Image.open(io.BytesIO(r.content))
            assert img.mode == "RGB" and np.asarray(img).shape == shape, path
        rendered = np.asarray(Image.open(io.BytesIO(post(served, "/render", {"z": z[0]}).content)))
        np.testing.assert_array_equal(rendered, np.rint(want[0] * 255).astype(np.uint8))
    finally:
        served.stop()


@pytest.mark.chromium
def test_page_renders_in_headless_chromium(server, tmp_path):
    """The page at /ui, run by a real browser: its script fetches /info and
    /render and shows the digit; the DOM after the scripts ran says so."""
    import mlflow_ui

    proc = subprocess.run(
        [mlflow_ui.chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=20000", "--dump-dom",
         f"{server.url}/ui"],
        capture_output=True, text=True, timeout=120)
    dom = proc.stdout
    assert 'data-rendered="224"' in dom, (proc.returncode, dom[-2000:], proc.stderr[-2000:])
    assert "rendered 224x224" in dom
    assert "diversity_ratio" in dom and "quality_gate_passed" in dom     # the model card
    assert 'src="blob:' in dom and dom.count('src="blob:') == 3          # digit, grid, strip


@pytest.fixture(scope="module")
def bento(home):
    """`bentoml build` from serving/bentofile.yaml, as `make bento` runs it."""
    tmp, env, chosen = home
    proc = subprocess.run([str(BIN / "bentoml"), "build", "-f", "serving/bentofile.yaml", "--output", "tag",
                           "--arg", f"model={chosen}", "."],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout.strip().splitlines()[-1].removeprefix("__tag__:")


def test_bentoml_build(home, bento):
    """The Bento packs the service, every module it imports and the page, names the
    model asked for, and keeps the choice as its argument."""
    tmp, env, chosen = home
    name, version = bento.split(":")
    src = tmp / "bentoml/bentos" / name / version / "src"
    assert (src / "serving/static/index.html").is_file()
    assert {p.name for p in (ROOT / "serving").glob("*.py")} == {p.name for p in (src / "serving").glob("*.py")}
    manifest = (tmp / "bentoml/bentos" / name / version / "bento.yaml").read_text()
    assert "serving.service:Generator" in manifest
    # The Bento names the model by tag; the store keeps it (containerize copies it in).
    stored = {f"mnist_gan_generator:{p.name}" for p in (tmp / "bentoml/models/mnist_gan_generator").iterdir()
              if (p / "saved_model/saved_model.pb").is_file()}
    referenced = yaml.safe_load(manifest)["services"][0]["models"]
    assert [m["tag"] for m in referenced] == [chosen] and chosen in stored
    assert yaml.safe_load(manifest)["args"] == {"model": chosen}
    # Its Python packages are the committed lock's, every one, and nothing was resolved again.
    env_python = tmp / "bentoml/bentos" / name / version / "env/python"
    packed = pins(env_python / "requirements.txt")
    assert set(pins(serving_lock.LOCK)) <= set(packed) and len(pins(serving_lock.LOCK)) > 50, packed
    assert set(packed) - set(pins(serving_lock.LOCK)) <= {serving_lock.bentoml_pin()}, packed
    assert not (env_python / "requirements.lock.txt").exists()


def pins(path) -> list[str]:
    return [line.split("#")[0].strip() for line in path.read_text().splitlines() if line.split("#")[0].strip()]


def test_the_bento_lock_pins_every_serving_requirement_and_this_bentoml():
    """The committed lock is current (`make bento` checks the same), and the check
    names a requirement it misses, a pin out of range and another BentoML."""
    lock = serving_lock.LOCK.read_text()
    assert serving_lock.problems(lock, contract.REQUIREMENTS.read_text(), serving_lock.bentoml_pin()) == []
    assert serving_lock.locked(lock)["tensorflow-cpu"] == next(
        p.split("==")[1] for p in pins(contract.REQUIREMENTS) if p.startswith("tensorflow-cpu=="))
    stale = serving_lock.problems(lock.replace("\nuvloop==", "\n# uvloop=="),
                                  "numpy>=2.5\nuvloop>=0.21\n", "bentoml==9.9.9")
    assert stale == [f"numpy=={serving_lock.locked(lock)['numpy']} is outside >=2.5", "uvloop is not pinned",
                     f"bentoml=={serving_lock.bentoml_pin().split('==')[1]} is outside ==9.9.9"], stale
    # Names compare as the index compares them: zope.interface is zope-interface's pin.
    assert serving_lock.problems("zope-interface==7.0\nbentoml==1\n", "zope.interface>=6\n", "bentoml==1") == []


def test_the_served_tensorflow_is_the_projects():
    """One pin of the serving TensorFlow (the CPU build), at the project's version."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    version = next(d.split("==")[1] for d in project if d.startswith("tensorflow=="))
    assert [p for p in pins(contract.REQUIREMENTS) if p.startswith("tensorflow")] == [f"tensorflow-cpu=={version}"]


@pytest.mark.parametrize("override", [False, True], ids=["its-model", "MNIST_GAN_MODEL"])
def test_bento_serves_from_another_directory(home, bento, tmp_path, override):
    """`bentoml serve <bento tag>` from a folder with no project files and no
    PYTHONPATH: the Bento's own copy of the service answers, with the model it
    was built with, or the one MNIST_GAN_MODEL names (as a container is pointed
    at another tag)."""
    tmp, env, chosen = home
    env = {k: v for k, v in env.items() if k != "PYTHONPATH"}
    want = chosen
    if override:
        want = store_generator(dict(env, PYTHONPATH=str(ROOT)), "mlp", 12)
        env["MNIST_GAN_MODEL"] = want
    served = Served(tmp_path, env, target=bento)
    try:
        served.wait_ready()
        info = requests.get(f"{served.url}/info", timeout=10).json()
        assert info["tag"] == want and info["z_dim"] == (12 if override else Z_DIM)
        r = post(served, "/generate", {"z": [[0.1] * info["z_dim"]] * 2})
        assert r.status_code == 200 and np.asarray(r.json()).shape == (2, 28, 28), r.text[:300]
        assert post(served, "/generate", {"z": [[0.1] * 3]}).status_code == 400
    finally:
        served.stop()
    assert not any(p.suffix == ".py" for p in tmp_path.rglob("*"))
