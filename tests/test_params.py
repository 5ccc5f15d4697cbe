import pytest
import yaml

from pipeline import params
from pipeline.errors import StageError


def test_repo_params_are_valid():
    for section in params.SECTIONS:
        params.load(section, "params.yaml")


def test_repo_params_hold_the_seed_defaults():
    # Deliberate departures from the seed's numbers, measured and commented in params.yaml:
    # the MLP's Adam (beta_1, learning rate) and the virtual labels (none in the seeds);
    # the run's length, batch, loss and weight average are the pipeline's choice
    # (README, "Defaults").
    run = {"steps", "batch_size", "loss", "ema", "sample_every"}
    repo = params.load("train", "params.yaml").model_dump(exclude=run)
    seeds = params.TrainParams().model_dump(exclude=run)
    assert repo.pop("virtual_labels") == 30
    assert seeds.pop("virtual_labels") == 0
    for key, ours, seed in [("beta_1", 0.5, 0.9), ("d_lr", 8e-4, 2e-4), ("g_lr", 8e-4, 2e-4)]:
        assert repo["mlp"]["optimizer"].pop(key) == ours
        assert seeds["mlp"]["optimizer"].pop(key) == seed
    assert repo == seeds


def test_defaults_fill_missing_section():
    assert params.parse("train", None) == params.TrainParams()


@pytest.mark.parametrize("section, raw, needle", [
    ("prepare", {"digits": [3, 11]}, "prepare.digits.1"),
    ("prepare", {"source": "web"}, "'pypi', 'keras', 'npz' or 'idx'"),
    ("prepare", {"source": "npz"}, "path is required"),
    ("prepare", {"limit": -1}, "prepare.limit"),
    ("prepare", {"colour": 1}, "prepare.colour"),
    ("train", {"arch": "vae"}, "'mlp', 'dcgan', 'dcgan_upsample' or 'dcgan_paper'"),
    ("train", {"loss": "lsgan"}, "'bce', 'wgan', 'wgan-gp' or 'hinge'"),
    ("train", {"mlp": {"optimizer": {"name": "sgd", "d_lr": 1, "g_lr": 1}}}, "train.mlp.optimizer.name"),
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
        params.parse(section, raw)
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


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
