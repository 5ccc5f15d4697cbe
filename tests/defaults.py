"""The project's params.yaml with changes laid over it (nested mappings merge key by
key): the params the unit tests start from, as the stages would load them."""
from pathlib import Path

from pipeline import params

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def train(**changes) -> params.TrainParams:
    return params.load("train", PARAMS, changes)


def prepare(**changes) -> params.PrepareParams:
    return params.load("prepare", PARAMS, changes)


def judge(**changes) -> params.JudgeParams:
    return params.load("judge", PARAMS, changes)


def evaluate(**changes) -> params.EvaluateParams:
    return params.load("evaluate", PARAMS, changes)


def params_yaml(**sections) -> str:
    """params.yaml's text with each section's changes laid over it (nested mappings merge)."""
    import yaml

    doc = yaml.safe_load(PARAMS.read_text())
    for section, changes in sections.items():
        doc[section] = params._merge(doc[section], params._nest(changes))
    return yaml.safe_dump(doc, sort_keys=False)
