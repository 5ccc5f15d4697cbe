"""params.yaml is the one place defaults live: the models validate it, name the key
of any bad or missing value, and list every key in effect."""
import pytest
import yaml

from defaults import PARAMS
from defaults import train as train_params
from pipeline import archs, losses, params
from pipeline.errors import StageError

REPO = yaml.safe_load(PARAMS.read_text())


def test_repo_params_are_valid():
    for section in params.SECTIONS:
        params.load(section, PARAMS)


def leaves(doc, prefix=""):
    out = {}
    for key, value in doc.items():
        if isinstance(value, dict):
            out.update(leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@pytest.mark.parametrize("section", list(params.SECTIONS))
def test_every_key_of_a_section_is_required(section):
    """No model default stands behind params.yaml: each key removed is an error naming it."""
    for key in leaves(REPO[section]):
        doc = yaml.safe_load(PARAMS.read_text())[section]
        *path, last = key.split(".")
        node = doc
        for part in path:
            node = node[part]
        if node is None:
            continue
        del node[last]
        with pytest.raises(StageError, match=f"{section}.{key}: missing"):
            params.parse(section, doc)


def test_a_missing_section_is_an_error():
    with pytest.raises(StageError, match="the section train is missing"):
        params.parse("train", None)


def test_every_registered_arch_and_loss_has_its_section():
    assert set(REPO["train"]) >= set(archs.NAMES)
    assert set(REPO["train"]["losses"]) == {losses.section(name) for name in losses.NAMES}


def test_the_arch_and_loss_comments_list_the_registries():
    lines = {line.split(":")[0].strip(): line for line in PARAMS.read_text().splitlines() if ":" in line}
    for key, names in (("arch", archs.NAMES), ("loss", losses.NAMES)):
        listed = lines[key].split("#", 1)[1].split("(")[0].split("|")
        assert tuple(name.strip() for name in listed) == names


def test_flat_lists_every_key_in_effect():
    """The flat list is walked from the model: every leaf of the train section but other
    archs' and losses' sections is there, with the loss's settings under generic names."""
    p = train_params(arch="dcgan", loss="wgan-gp")
    flat = p.flat()
    train = REPO["train"]
    skip = {*archs.NAMES, "losses"}
    assert {f"train.{k}" for k in train if k not in skip} <= flat.keys()
    assert {f"train.dcgan.{k}" for k in leaves(train["dcgan"])} <= flat.keys()
    assert not any(k.startswith(("train.mlp.", "train.losses.")) for k in flat)
    settings = train["losses"]["wgan_gp"]
    assert {k: flat[f"train.{k}"] for k in ("n_critic", "clip", "gp_weight", "r1_weight")} == \
        {k: settings[k] for k in ("n_critic", "clip", "gp_weight", "r1_weight")}
    assert flat["train.optimizer.name"] == settings["optimizer"]["name"]
    assert flat["train.d_arch"] == "dcgan"


def test_override_merges_nested_and_dotted_keys_and_validates():
    p = train_params()
    q = params.override(p, {"mlp.d_dropout": 0.25, "dcgan": {"kernel_size": 3}})
    assert q.mlp.d_dropout == 0.25 and q.dcgan.kernel_size == 3 and q.dcgan.g_filters == p.dcgan.g_filters
    with pytest.raises(StageError, match="train.dcgan.kernel_size"):
        params.override(p, {"dcgan.kernel_size": 0})


def test_with_sets_applies_dvc_style_items():
    doc = params.with_sets({"train": {"steps": 1, "mlp": {"g_units": [1]}}},
                           ["train.steps=5", "train.mlp.g_units=[2, 3]", "evaluate.kl_max=0.2"])
    assert doc == {"train": {"steps": 5, "mlp": {"g_units": [2, 3]}}, "evaluate": {"kl_max": 0.2}}


def allowed(names: tuple[str, ...]) -> str:
    """pydantic's list of a Literal's values, as its error message writes it."""
    return ", ".join(repr(n) for n in names[:-1]) + f" or {names[-1]!r}"


@pytest.mark.parametrize("section, raw, needle", [
    ("prepare", {"digits": [3, 11]}, "prepare.digits.1"),
    ("prepare", {"source": "web"}, "'pypi', 'keras', 'npz' or 'idx'"),
    ("prepare", {"source": "npz", "path": ""}, "path is required"),
    ("prepare", {"limit": -1}, "prepare.limit"),
    ("prepare", {"colour": 1}, "prepare.colour"),
    ("train", {"arch": "vae"}, f"train.arch: Input should be {allowed(archs.NAMES)}"),
    ("train", {"loss": "nonsense"}, f"train.loss: Input should be {allowed(losses.NAMES)}"),
    ("train", {"mlp": {"optimizer": {"name": "sgd"}}}, "train.mlp.optimizer.name"),
    ("train", {"losses": {"wgan": {"n_critic": 0}}}, "train.losses.wgan.n_critic"),
    ("train", {"dcgan": {"g_strides": [2, 2, 2, 1]}}, "expected 28x28"),
    ("train", {"steps": 0}, "train.steps"),
    ("train", {"strategy": "horovod"}, "train.strategy: Input should be 'default', 'mirrored' or 'multi_worker'"),
    ("train", {"strategy": "mirrored", "jit_compile": True}, "train.jit_compile: true cannot run under train.strategy"),
    ("train", {"strategy": "multi_worker", "jit_compile": True},
     "train.jit_compile: true cannot run under train.strategy: multi_worker"),
    ("evaluate", {"num_samples": "many"}, "evaluate.num_samples"),
])
def test_bad_values_name_the_key(section, raw, needle):
    with pytest.raises(StageError) as err:
        params.parse(section, params._merge(REPO[section], raw))
    assert needle in str(err.value)
    assert "\n" not in str(err.value) and "missing" not in str(err.value)


def test_load_reports_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(StageError, match="not found"):
        params.load("train", tmp_path / "nope.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(StageError, match="not valid YAML"):
        params.load("train", bad)
    bad.write_text(yaml.safe_dump({"train": 3}))
    with pytest.raises(StageError, match="train must be a mapping"):
        params.load("train", bad)
