"""Typed params, one pydantic model per params.yaml section.

params.yaml holds every value; the models hold types, bounds and the checks
between keys, and have no defaults: a key missing from params.yaml is an error
that names it. Loading validates; an error names the key and the allowed
values. The arch and loss names, and their sections under `train`, come from
the registries (pipeline.archs, pipeline.losses).
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, TypeVar

import yaml
from pydantic import BaseModel, Field, ValidationError, create_model, model_validator

from pipeline import archs, losses
from pipeline.archs import OptimizerParams, Section
from pipeline.errors import StageError

Digit = Annotated[int, Field(ge=0, le=9)]
ArchName = Literal[archs.NAMES]
LossName = Literal[losses.NAMES]
Condition = Literal[archs.CONDITIONS]


class PrepareParams(Section):
    source: Literal["pypi", "keras", "npz", "idx"]
    path: str
    digits: list[Digit]
    limit: int = Field(ge=0)
    # What the GAN trains on and is scored against: the digits, or Stacked MNIST (three
    # digits as the R, G, B channels of one image: 1,000 modes). The stacked set is drawn
    # from the prepared digits when train and evaluate load them (data.training_set), so
    # the judge, trained on the digits, is the same for both.
    dataset: Literal["mnist", "stacked"]
    stacked_train: int = Field(ge=1, le=10_000_000)
    stacked_test: int = Field(ge=2, le=10_000_000)
    stacked_seed: int = Field(ge=0, lt=2**32)

    def dataset_flat(self) -> dict[str, object]:
        """The keys that say what train and evaluate use (data.training_set), flat, as
        MLflow logs them: the stacked set's only when it is the dataset."""
        keys = [k for k in type(self).model_fields if k == "dataset" or
                (self.dataset == "stacked" and k.startswith("stacked_"))]
        return {f"prepare.{k}": getattr(self, k) for k in keys}

    @model_validator(mode="after")
    def _path_for_local_sources(self):
        if self.source in ("npz", "idx") and not self.path:
            raise ValueError(f"path is required when source is {self.source!r}")
        return self


class LossParams(Section):
    n_critic: int = Field(ge=1, le=20)   # D updates per G update
    clip: float | None = Field(gt=0)     # clip D's weights to [-clip, clip] after each update (null: none)
    gp_weight: float = Field(ge=0)       # WGAN-GP's gradient penalty weight, lambda (0: none)
    r1_weight: float = Field(ge=0)       # R1 penalty gamma on real images (0: none)
    optimizer: OptimizerParams | None    # null: the architecture's optimizer


# One section per registered loss, named as losses.section names it.
LossesParams = create_model("LossesParams", __base__=Section,
                            **{losses.section(name): (LossParams, ...) for name in losses.NAMES})


class _Train(Section):
    arch: ArchName
    # The discriminator's arch when it is not the generator's (its numbers from train.<d_arch>).
    d_arch: ArchName | None
    loss: LossName
    z_dim: int = Field(ge=1, le=1024)
    steps: int = Field(ge=1)
    batch_size: int = Field(ge=2, le=4096)
    seed: int = Field(ge=0, lt=2**31)
    sample_every: int = Field(ge=1)
    log_every: int = Field(ge=1)
    checkpoint_every: int = Field(ge=1)
    oscillation_window: int = Field(ge=2)
    jit_compile: Literal["auto", True, False]
    ema: float = Field(ge=0, lt=1)  # decay of the generator's weight average (0: none)
    g_steps: int = Field(ge=1, le=8)  # G updates per step, after the loss's n_critic D updates
    standing_samples: int = Field(ge=16, le=1 << 20)  # draws of z for gan.standing_statistics
    # Any generator: z gains a one-hot code of the argmax of its first k components, times
    # virtual_scale (0: none, as the seeds; layers.VirtualLabel); virtual_groups such codes
    # from the next k components each.
    virtual_labels: int = Field(ge=0, le=1024)
    virtual_scale: float = Field(gt=0, le=100)
    virtual_groups: int = Field(ge=1, le=16)
    # joint: G draws an image's channels together; independent: the same one-channel network
    # draws each channel from its own slice of z (z_dim / channels each), as Stacked MNIST
    # stacks independent digits (models.build_generator).
    channel_draw: Literal["joint", "independent"]
    # joint: D judges an image's channels together; independent: the same one-channel D judges
    # each channel as a sample of its own, a logit per channel (models.build_discriminator).
    channel_judge: Literal["joint", "independent"]
    # mirrored: data-parallel over every GPU (else every CPU device) of this machine; multi_worker:
    # over the hosts TF_CONFIG names (distribution.strategy). Either way batch_size is the global batch.
    strategy: Literal["default", "mirrored", "multi_worker"]
    # auto: mixed bfloat16 where the hardware computes it natively (distribution.precision_for),
    # else float32.
    precision: Literal["auto", "float32", "bfloat16"]
    # PacGAN's packing (Lin et al. 2018): D judges m images at once, concatenated along
    # the channels, real with real and generated with generated (1: none); any loss.
    pack: int = Field(ge=1, le=16)
    # Whether G draws, and D judges, a requested digit, and how (archs.CONDITIONS).
    condition: Condition
    condition_scale: float = Field(gt=0, le=100)  # the digit's one-hot in G's input is times this
    losses: LossesParams

    @property
    def arch_params(self) -> archs.ArchParams:
        return getattr(self, self.arch)

    @property
    def d_arch_name(self) -> str:
        return self.d_arch or self.arch

    @property
    def loss_params(self) -> LossParams:
        return getattr(self.losses, losses.section(self.loss))

    @property
    def optimizer(self) -> OptimizerParams:
        return self.loss_params.optimizer or self.arch_params.optimizer

    def use_jit(self, precision: str = "float32") -> bool:
        """XLA for the step in `precision` (`train.precision` resolved). `auto`: XLA only for
        the MLP in float32 on one device, the one case where it measured faster on 2-core
        CPUs (bench/train_throughput.py); XLA cannot compile a step whose variables live on
        several devices."""
        if self.jit_compile == "auto":
            return self.arch == "mlp" and self.strategy == "default" and precision == "float32"
        return bool(self.jit_compile)

    def flat(self, precision: str | None = None) -> dict[str, object]:
        """The params in effect, flat, as MLflow logs them, walked from the model: every
        key but the arch sections and the loss table; then the sections of the arch (and
        D's arch) in use; then the loss's settings under one name whatever the loss
        (`train.n_critic`, ...), so that runs of two losses compare key by key, with the
        optimizer in effect as `train.optimizer`. `precision` is `train.precision`
        resolved (default: as set); jit_compile and d_arch are logged resolved."""
        precision = precision or self.precision
        skip = {*archs.NAMES, "losses"}
        out = {f"train.{k}": getattr(self, k) for k in type(self).model_fields if k not in skip}
        out.update({"train.d_arch": self.d_arch_name, "train.jit_compile": self.use_jit(precision),
                    "train.precision": precision})
        for name in dict.fromkeys([self.arch, self.d_arch_name]):
            out.update(_walk(f"train.{name}", getattr(self, name)))
        out.update(_walk("train", self.loss_params, skip={"optimizer"}))
        out.update(_walk("train.optimizer", self.optimizer))
        return out

    @model_validator(mode="after")
    def _keys_agree(self):
        if self.jit_compile is True and self.strategy != "default":
            raise ValueError(f"train.jit_compile: true cannot run under train.strategy: {self.strategy} (XLA needs the "
                             "variables on one device); use auto or false")
        if self.virtual_labels * self.virtual_groups > self.z_dim:
            raise ValueError(f"train.virtual_labels={self.virtual_labels} times train.virtual_groups="
                             f"{self.virtual_groups} must be at most train.z_dim={self.z_dim} "
                             "(each code is read off its own components of z)")
        if self.batch_size % self.pack:
            raise ValueError(f"train.batch_size={self.batch_size} must be a multiple of train.pack={self.pack} "
                             "(D judges the batch in packs of that many images)")
        return self


# One section per registered arch, named as the arch is.
TrainParams = create_model("TrainParams", __base__=_Train,
                           **{name: (arch.params, ...) for name, arch in archs.REGISTRY.items()})


class JudgeParams(Section):
    epochs: int = Field(ge=1, le=100)
    batch_size: int = Field(ge=8, le=4096)
    learning_rate: float = Field(gt=0, lt=1)
    width: int = Field(ge=4, le=256)
    feature_dim: int = Field(ge=8, le=1024)
    seed: int = Field(ge=0)


class EvaluateParams(Section):
    num_samples: int = Field(ge=2, le=100_000)
    seed: int = Field(ge=0)
    k: int = Field(ge=1, le=100)
    kid_subsets: int = Field(ge=1, le=10_000)        # KID's mean and std over this many draws
    kid_subset_size: int = Field(ge=2, le=100_000)   # of this many images each (capped at num_samples)
    # The L1 figures (memorization, copying test, diversity, near duplicates) on this many
    # of the generated and of the held-out images; 0: all num_samples. Every query still
    # searches the whole training set.
    l1_samples: int = Field(ge=0, le=100_000)
    # The verdict's thresholds (evaluate.RULES uses each).
    mode_min_share: float = Field(gt=0, le=1)
    kl_max: float = Field(gt=0)
    diversity_min: float = Field(gt=0, le=2)
    near_l1: float = Field(ge=0, lt=1)
    copy_l1: float = Field(ge=0, lt=1)
    duplicate_excess_max: float = Field(ge=0, le=1)
    copy_excess_max: float = Field(ge=0, le=1)
    copying_z_min: float
    classifier_score_ratio_min: float = Field(gt=0, le=2)
    precision_min: float = Field(ge=0, le=1)
    recall_min: float = Field(ge=0, le=1)
    fcd_max: float = Field(gt=0)
    # A conditional generator's alone: the share read as the digit asked for, over the
    # judge's accuracy on real images (over all digits and the worst digit), and the worst
    # digit's diversity ratio.
    cond_accuracy_ratio_min: float = Field(gt=0, le=1)
    cond_diversity_min: float = Field(gt=0, le=2)


SECTIONS: dict[str, type[Section]] = {
    "prepare": PrepareParams,
    "train": TrainParams,
    "judge": JudgeParams,
    "evaluate": EvaluateParams,
}
P = TypeVar("P", bound=Section)


def _walk(prefix: str, obj, skip: set[str] = frozenset()) -> dict[str, object]:
    """A model's leaves as `prefix.key[.sub]` -> value."""
    if not isinstance(obj, BaseModel):
        return {prefix: obj}
    out: dict[str, object] = {}
    for k in type(obj).model_fields:
        if k not in skip:
            out.update(_walk(f"{prefix}.{k}", getattr(obj, k)))
    return out


def flat(section: str, model: Section) -> dict[str, object]:
    """One section's params as MLflow logs them: `section.key` -> value."""
    if isinstance(model, TrainParams):
        return model.flat()
    return _walk(section, model)


def _describe(section: str, err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        key = ".".join(str(p) for p in (section, *e["loc"]))
        if e["type"] == "missing":
            parts.append(f"{key}: missing (params.yaml must set every key)")
            continue
        got = "" if not e["loc"] else f" (got {e.get('input')!r})"
        parts.append(f"{key}: {e['msg']}{got}")
    return "; ".join(parts)


def _merge(base: dict, changes: dict) -> dict:
    """`base` with `changes` laid over it: mappings merge key by key, anything else replaces."""
    out = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _nest(changes: dict) -> dict:
    """Dotted keys ("mlp.d_dropout": 0.1) as nested mappings."""
    out: dict = {}
    for key, value in changes.items():
        *path, last = str(key).split(".")
        node = out
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def with_sets(doc: dict, sets: list[str]) -> dict:
    """A params document with `dvc exp run -S`-style `section.key.sub=value` items applied
    (values parsed as YAML)."""
    items = {}
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep:
            raise StageError(f"{item!r}: expected section.key=value")
        items[key] = yaml.safe_load(value)
    return _merge(doc, _nest(items))


def parse(section: str, raw: dict | None) -> Section:
    """Validate one section's mapping."""
    model = SECTIONS[section]
    if raw is None:
        raise StageError(f"params.yaml: the section {section} is missing")
    if not isinstance(raw, dict):
        raise StageError(f"params: {section} must be a mapping, got {type(raw).__name__}")
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        raise StageError(f"params.yaml: {_describe(section, err)}") from None


def load(section: str, path: str | Path = "params.yaml", changes: dict | None = None) -> Section:
    """Read and validate one section of params.yaml, with `changes` (dotted or nested
    keys of that section) laid over it first."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise StageError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise StageError(f"{path}: not valid YAML: {exc}") from None
    raw = doc.get(section)
    if changes and isinstance(raw, dict):
        raw = _merge(raw, _nest(changes))
    return parse(section, raw)


def override(model: P, changes: dict) -> P:
    """`model` with `changes` (dotted or nested keys) laid over it, validated again."""
    section = next(name for name, cls in SECTIONS.items() if isinstance(model, cls))
    return parse(section, _merge(model.model_dump(), _nest(changes)))
