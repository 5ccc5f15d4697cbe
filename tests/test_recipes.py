"""recipes/*.yaml: each one's overrides, applied as `dvc exp run -S` applies them,
give params every stage accepts; the override syntax itself."""
import sys
from pathlib import Path

import pytest
import yaml

from pipeline import params

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from ops.recipe import overrides  # noqa: E402

RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))


def test_there_are_recipes_for_the_seeds_convolutional_archs():
    assert {p.stem for p in RECIPES} >= {"dcgan", "dcgan_upsample"}


SEEDS = {"mlp_seed004": {"batch_size": 32, "steps": 50000,
                         "optimizer": {"name": "adam", "d_lr": 2e-4, "g_lr": 2e-4, "beta_1": 0.9}},
         "dcgan_seed001": {"optimizer": {"name": "rmsprop", "d_lr": 2e-4, "g_lr": 1e-4}},
         "dcgan_upsample_seed002": {"batch_size": 64, "steps": 2000,
                                    "optimizer": {"name": "rmsprop", "d_lr": 8e-4, "g_lr": 4e-4}}}


@pytest.mark.parametrize("recipe", sorted(SEEDS))
def test_each_seed_arch_has_a_recipe_of_the_seeds_own_numbers(recipe):
    """The seeds' training numbers, where params.yaml departs from them, are a recipe:
    no weight average, no virtual labels, float32, the seed's optimizer, batch and length."""
    doc = params.with_sets(yaml.safe_load((ROOT / "params.yaml").read_text()),
                           overrides(ROOT / "recipes" / f"{recipe}.yaml"))
    train = params.parse("train", doc["train"])
    want = SEEDS[recipe]
    assert (train.ema, train.virtual_labels, train.precision, train.loss, train.d_arch) == (0.0, 0, "float32", "bce",
                                                                                             None)
    assert {k: getattr(train.optimizer, k) for k in want["optimizer"]} == want["optimizer"]
    assert {k: getattr(train, k) for k in want if k != "optimizer"} == {k: v for k, v in want.items()
                                                                        if k != "optimizer"}


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_overrides_validate_and_change_what_they_name(recipe):
    items = overrides(recipe)
    repo = yaml.safe_load((ROOT / "params.yaml").read_text())
    doc = params.with_sets(yaml.safe_load((ROOT / "params.yaml").read_text()), items)
    for section in params.SECTIONS:
        params.parse(section, doc.get(section))
    train = params.parse("train", doc["train"])
    # Named after the arch it trains, after asking for a digit, or after the Stacked MNIST it trains on.
    first = recipe.stem.split("_")[0]
    assert (first in train.arch or (first == "conditional" and train.condition != "none")
            or (first == "stacked" and params.parse("prepare", doc["prepare"]).dataset == "stacked"))
    for item in items:  # every override is a leaf that params.yaml has, so -S cannot add a stray key
        key, _ = item.split("=", 1)
        node = repo
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"{recipe.name}: {key} is not in params.yaml"
            node = node[part]


def test_nested_values_become_leaves_and_lists_stay_one_word(tmp_path):
    f = tmp_path / "r.yaml"
    f.write_text("train.arch: dcgan\ntrain.dcgan.optimizer: {name: adam, g_lr: 0.0002}\n"
                 "train.dcgan.d_filters: [32, 64]\ntrain.ema: 0.999\n")
    assert overrides(f) == ["train.arch=dcgan", "train.dcgan.optimizer.name=adam",
                            "train.dcgan.optimizer.g_lr=0.0002", "train.dcgan.d_filters=[32,64]", "train.ema=0.999"]


@pytest.mark.parametrize("text, needle", [("[1, 2]", "mapping"), ("steps: 5", "dotted"),
                                          ("train.path: a b", "space")])
def test_a_bad_recipe_says_what_is_wrong(tmp_path, text, needle):
    f = tmp_path / "r.yaml"
    f.write_text(text)
    with pytest.raises(SystemExit, match=needle):
        overrides(f)
