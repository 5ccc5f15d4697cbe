"""Typed params, one pydantic model per params.yaml section.

Loading validates; an error names the key and the allowed values.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.errors import StageError

Digit = Annotated[int, Field(ge=0, le=9)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PrepareParams(_Section):
    source: Literal["pypi", "keras", "npz", "idx"] = "pypi"
    path: str = ""
    digits: list[Digit] = []
    limit: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _path_for_local_sources(self):
        if self.source in ("npz", "idx") and not self.path:
            raise ValueError(f"path is required when source is {self.source!r}")
        return self


class TrainParams(_Section):
    arch: Literal["mlp", "dcgan"] = "mlp"
    loss: Literal["bce"] = "bce"
    optimizer: Literal["adam", "rmsprop"] = "rmsprop"
    z_dim: int = Field(100, ge=1, le=1024)
    steps: int = Field(6000, ge=1)
    batch_size: int = Field(64, ge=2, le=4096)
    d_lr: float = Field(2e-4, gt=0, lt=1)
    g_lr: float = Field(2e-4, gt=0, lt=1)
    seed: int = Field(42, ge=0)
    sample_every: int = Field(500, ge=1)
    log_every: int = Field(50, ge=1)


class EvaluateParams(_Section):
    num_samples: int = Field(2000, ge=2, le=100_000)
    seed: int = Field(0, ge=0)


SECTIONS: dict[str, type[_Section]] = {
    "prepare": PrepareParams,
    "train": TrainParams,
    "evaluate": EvaluateParams,
}
P = TypeVar("P", bound=_Section)


def _describe(section: str, err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        key = ".".join(str(p) for p in (section, *e["loc"]))
        got = "" if e["type"] == "missing" else f" (got {e.get('input')!r})"
        parts.append(f"{key}: {e['msg']}{got}")
    return "; ".join(parts)


def parse(section: str, raw: dict | None) -> _Section:
    """Validate one section's mapping."""
    model = SECTIONS[section]
    if raw is not None and not isinstance(raw, dict):
        raise StageError(f"params: {section} must be a mapping, got {type(raw).__name__}")
    try:
        return model.model_validate(raw or {})
    except ValidationError as err:
        raise StageError(f"params.yaml: {_describe(section, err)}") from None


def load(section: str, path: str | Path = "params.yaml") -> _Section:
    """Read and validate one section of params.yaml."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise StageError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise StageError(f"{path}: not valid YAML: {exc}") from None
    return parse(section, doc.get(section))
