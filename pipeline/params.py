"""Typed params, one pydantic model per params.yaml section.

Loading validates; an error names the key and the allowed values.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, TypeVar

import numpy as np
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
    # What the GAN trains on and is scored against: the digits, or Stacked MNIST (three
    # digits as the R, G, B channels of one image: 1,000 modes). The stacked set is drawn
    # from the prepared digits when train and evaluate load them (data.training_set), so
    # the judge, trained on the digits, is the same for both.
    dataset: Literal["mnist", "stacked"] = "mnist"
    stacked_train: int = Field(128_000, ge=1, le=10_000_000)  # stacked training images (VEEGAN/PacGAN: 128,000)
    stacked_test: int = Field(26_000, ge=2, le=10_000_000)    # stacked held-out images, from the test digits
    stacked_seed: int = Field(0, ge=0, lt=2**32)

    def dataset_flat(self) -> dict[str, object]:
        """The keys that say what train and evaluate use (data.training_set), flat, as
        MLflow logs them: the stacked set's only when it is the dataset."""
        keys = ["dataset"] + (["stacked_train", "stacked_test", "stacked_seed"] if self.dataset == "stacked" else [])
        return {f"prepare.{k}": getattr(self, k) for k in keys}

    @model_validator(mode="after")
    def _path_for_local_sources(self):
        if self.source in ("npz", "idx") and not self.path:
            raise ValueError(f"path is required when source is {self.source!r}")
        return self


class OptimizerParams(_Section):
    name: Literal["adam", "rmsprop"]
    d_lr: float = Field(gt=0, lt=1)
    g_lr: float = Field(gt=0, lt=1)
    beta_1: float = Field(0.9, ge=0, lt=1)     # adam only
    beta_2: float = Field(0.999, ge=0, lt=1)   # adam only


class MLPArch(_Section):
    """Seed 004."""
    g_units: list[Annotated[int, Field(ge=1)]] = [128, 256, 512, 1024]
    g_bn_momentum: float = Field(0.8, ge=0, lt=1)
    d_units: list[Annotated[int, Field(ge=1)]] = [784, 392]
    d_dropout: float = Field(0.0, ge=0, lt=1)   # after each of D's hidden layers (0: none)
    leaky_slope: float = Field(0.2, ge=0, lt=1)
    optimizer: OptimizerParams = OptimizerParams(name="adam", d_lr=2e-4, g_lr=2e-4)


class DCGANArch(_Section):
    """Seed 001 (Atienza)."""
    g_filters: list[Annotated[int, Field(ge=1)]] = [128, 64, 32, 1]
    g_strides: list[Literal[1, 2]] = [2, 2, 1, 1]
    d_filters: list[Annotated[int, Field(ge=1)]] = [32, 64, 128, 256]
    d_strides: list[Literal[1, 2]] = [2, 2, 2, 1]
    kernel_size: int = Field(5, ge=1, le=9)
    leaky_slope: float = Field(0.2, ge=0, lt=1)
    optimizer: OptimizerParams = OptimizerParams(name="rmsprop", d_lr=2e-4, g_lr=1e-4)


class DCGANUpsampleArch(_Section):
    """Seeds 000/002 (Foster)."""
    upscale: Literal["upsample", "transpose"] = "upsample"
    g_dense_shape: list[Annotated[int, Field(ge=1)]] = [7, 7, 64]
    g_bn_momentum: float = Field(0.9, ge=0, lt=1)
    g_upsample: list[Literal[1, 2]] = [2, 2, 1, 1]
    g_filters: list[Annotated[int, Field(ge=1)]] = [128, 64, 64, 1]
    d_filters: list[Annotated[int, Field(ge=1)]] = [64, 64, 128, 128]
    d_strides: list[Literal[1, 2]] = [2, 2, 2, 1]
    d_bn_momentum: float | None = Field(None, ge=0, lt=1)
    d_dropout: float = Field(0.4, ge=0, lt=1)
    kernel_size: int = Field(5, ge=1, le=9)
    activation: Literal["relu", "leaky_relu"] = "relu"
    init_stddev: float = Field(0.02, gt=0)
    optimizer: OptimizerParams = OptimizerParams(name="rmsprop", d_lr=8e-4, g_lr=4e-4)


class LossParams(_Section):
    n_critic: int = Field(1, ge=1, le=20)      # D updates per G update
    clip: float | None = Field(None, gt=0)      # wgan weight clipping
    gp_weight: float = Field(0.0, ge=0)         # wgan-gp penalty weight (lambda)
    r1_weight: float = Field(0.0, ge=0)         # R1 penalty gamma on real images, any loss (0: none)
    optimizer: OptimizerParams | None = None    # None: the architecture's optimizer


class LossesParams(_Section):
    bce: LossParams = LossParams()
    wgan: LossParams = LossParams(n_critic=5, clip=0.01,
                                  optimizer=OptimizerParams(name="rmsprop", d_lr=5e-5, g_lr=5e-5))
    wgan_gp: LossParams = LossParams(n_critic=5, gp_weight=10.0,
                                     optimizer=OptimizerParams(name="adam", d_lr=1e-4, g_lr=1e-4,
                                                               beta_1=0.0, beta_2=0.9))
    hinge: LossParams = LossParams()


class DCGANPaperArch(_Section):
    """The DCGAN of VEEGAN's and PacGAN's Stacked MNIST runs (Radford et al.'s layout at
    28x28): Dense to 2x2 x 8*gf, Conv2DTranspose blocks (4*gf, 2*gf, gf, channels; kernel
    5, stride 2; 4x4 cropped to TensorFlow's 7x7 where 8x8 would overshoot) with BatchNorm
    and ReLU, tanh; D: Conv2D blocks (df, 2*df, 4*df, 8*df; kernel 5, stride 2), BatchNorm
    after the first, LeakyReLU 0.2, Dense(1). Adam 2e-4, beta_1 0.5."""
    gf: int = Field(64, ge=1, le=1024)
    df: int = Field(64, ge=1, le=1024)
    kernel_size: int = Field(5, ge=1, le=9)
    bn_momentum: float = Field(0.9, ge=0, lt=1)
    leaky_slope: float = Field(0.2, ge=0, lt=1)
    optimizer: OptimizerParams = OptimizerParams(name="adam", d_lr=2e-4, g_lr=2e-4, beta_1=0.5)


Arch = Literal["mlp", "dcgan", "dcgan_upsample", "dcgan_paper"]


class TrainParams(_Section):
    arch: Arch = "mlp"
    # The discriminator's arch when it is not the generator's (its numbers from train.<d_arch>).
    d_arch: Arch | None = None
    loss: Literal["bce", "wgan", "wgan-gp", "hinge"] = "bce"
    z_dim: int = Field(100, ge=1, le=1024)
    steps: int = Field(6000, ge=1)
    batch_size: int = Field(64, ge=2, le=4096)
    seed: int = Field(42, ge=0, lt=2**31)
    sample_every: int = Field(500, ge=1)
    log_every: int = Field(50, ge=1)
    checkpoint_every: int = Field(500, ge=1)
    oscillation_window: int = Field(200, ge=2)
    jit_compile: Literal["auto", True, False] = "auto"
    ema: float = Field(0.0, ge=0, lt=1)  # decay of the generator's weight average (0: none)
    # Any generator: z gains a one-hot code of the argmax of its first k components, times
    # virtual_scale (0: none, as the seeds; models.VirtualLabel).
    virtual_labels: int = Field(0, ge=0, le=1024)
    virtual_scale: float = Field(4.0, gt=0, le=100)
    # mirrored: data-parallel over every GPU (else every CPU device) of this machine; multi_worker:
    # over the hosts TF_CONFIG names (train.strategy). Either way batch_size is the global batch.
    strategy: Literal["default", "mirrored", "multi_worker"] = "default"
    # auto: mixed bfloat16 where the hardware computes it natively (train.precision_for), else
    # float32, as the seeds ran (params.yaml sets auto).
    precision: Literal["auto", "float32", "bfloat16"] = "float32"
    # PacGAN's packing (Lin et al. 2018): D judges m images at once, concatenated along
    # the channels, real with real and generated with generated (1: none); any loss.
    pack: int = Field(1, ge=1, le=16)
    mlp: MLPArch = MLPArch()
    dcgan: DCGANArch = DCGANArch()
    dcgan_upsample: DCGANUpsampleArch = DCGANUpsampleArch()
    dcgan_paper: DCGANPaperArch = DCGANPaperArch()
    losses: LossesParams = LossesParams()

    @property
    def arch_params(self):
        return getattr(self, self.arch)

    @property
    def d_arch_name(self) -> str:
        return self.d_arch or self.arch

    @property
    def loss_params(self) -> LossParams:
        return getattr(self.losses, self.loss.replace("-", "_"))

    @property
    def optimizer(self) -> OptimizerParams:
        return self.loss_params.optimizer or self.arch_params.optimizer

    @property
    def loss_settings(self) -> dict:
        """What the GAN's loss takes: clipping only for wgan, the penalty only for wgan-gp."""
        lp = self.loss_params
        return {"n_critic": lp.n_critic, "clip": lp.clip if self.loss == "wgan" else None,
                "gp_weight": lp.gp_weight if self.loss == "wgan-gp" else 0.0, "r1_weight": lp.r1_weight}

    def use_jit(self, precision: str = "float32") -> bool:
        """XLA for the step in `precision` (`train.precision` resolved). Measured on 2-core
        CPUs: XLA made the MLP step faster in float32, and the conv nets and any bfloat16
        step slower (MLP at batch 256: 23.6 ms float32 with XLA, 24.6 bfloat16 with, 19.4
        bfloat16 without). XLA cannot compile a step whose variables live on several devices."""
        if self.jit_compile == "auto":
            return self.arch == "mlp" and self.strategy == "default" and precision == "float32"
        return bool(self.jit_compile)

    def flat(self, precision: str | None = None) -> dict[str, object]:
        """The params in effect, flat, as MLflow logs them (only the chosen arch and loss),
        with `precision` the resolved `train.precision` (default: as set)."""
        out: dict[str, object] = {}

        def walk(prefix: str, obj):
            if isinstance(obj, BaseModel):
                for k in type(obj).model_fields:
                    walk(f"{prefix}.{k}", getattr(obj, k))
            else:
                out[prefix] = obj

        for k in ("arch", "loss", "z_dim", "steps", "batch_size", "seed", "sample_every", "log_every",
                  "checkpoint_every", "oscillation_window", "ema", "virtual_labels", "virtual_scale", "pack"):
            out[f"train.{k}"] = getattr(self, k)
        precision = precision or self.precision
        out["train.jit_compile"] = self.use_jit(precision)
        out["train.strategy"] = self.strategy
        out["train.precision"] = precision
        walk(f"train.{self.arch}", self.arch_params)
        if self.d_arch_name != self.arch:
            out["train.d_arch"] = self.d_arch_name
            walk(f"train.{self.d_arch_name}", getattr(self, self.d_arch_name))
        # The loss's settings in effect under one name whatever the loss, so that runs
        # of two losses compare key by key (its optimizer is train.optimizer).
        out.update({f"train.{k}": v for k, v in self.loss_settings.items()})
        walk("train.optimizer", self.optimizer)
        return out

    @model_validator(mode="after")
    def _layer_lists_agree(self):
        if self.jit_compile is True and self.strategy != "default":
            raise ValueError(f"train.jit_compile: true cannot run under train.strategy: {self.strategy} (XLA needs the "
                             "variables on one device); use auto or false")
        if self.virtual_labels > self.z_dim:
            raise ValueError(f"train.virtual_labels={self.virtual_labels} must be at most train.z_dim={self.z_dim} "
                             "(the code is read off z's first components)")
        if self.batch_size % self.pack:
            raise ValueError(f"train.batch_size={self.batch_size} must be a multiple of train.pack={self.pack} "
                             "(D judges the batch in packs of that many images)")
        a = self.dcgan
        if len(a.g_filters) != len(a.g_strides) or len(a.d_filters) != len(a.d_strides):
            raise ValueError("dcgan: g_filters/g_strides and d_filters/d_strides must have equal lengths")
        u = self.dcgan_upsample
        if len(u.g_filters) != len(u.g_upsample) or len(u.d_filters) != len(u.d_strides):
            raise ValueError("dcgan_upsample: g_filters/g_upsample and d_filters/d_strides must have equal lengths")
        for name, arch, factors in (("dcgan", a, a.g_strides), ("dcgan_upsample", u, u.g_upsample)):
            if arch.g_filters[-1] != 1:
                raise ValueError(f"{name}.g_filters must end with 1 (the image's channel; a dataset of more "
                                 "channels, prepare.dataset: stacked, widens it)")
            start = 7 if name == "dcgan" else u.g_dense_shape[0]
            size = start * int(np.prod(factors))
            if size != 28 or (name == "dcgan_upsample" and u.g_dense_shape[0] != u.g_dense_shape[1]):
                raise ValueError(f"{name}: the generator upscales to {size}x{size}, expected 28x28")
        return self


class JudgeParams(_Section):
    epochs: int = Field(3, ge=1, le=100)
    batch_size: int = Field(128, ge=8, le=4096)
    learning_rate: float = Field(3e-3, gt=0, lt=1)
    width: int = Field(8, ge=4, le=256)
    feature_dim: int = Field(128, ge=8, le=1024)
    seed: int = Field(0, ge=0)


class EvaluateParams(_Section):
    num_samples: int = Field(2000, ge=2, le=100_000)
    seed: int = Field(0, ge=0)
    # Thresholds of the verdict; README "Metrics" says how each is used.
    mode_min_share: float = Field(0.2, gt=0, le=1)
    kl_max: float = Field(0.1, gt=0)
    diversity_min: float = Field(0.6, gt=0, le=2)
    near_l1: float = Field(0.01, ge=0, lt=1)
    copy_l1: float = Field(0.005, ge=0, lt=1)
    duplicate_excess_max: float = Field(0.05, ge=0, le=1)
    copy_excess_max: float = Field(0.05, ge=0, le=1)
    copying_z_min: float = Field(-3.0)
    classifier_score_ratio_min: float = Field(0.9, gt=0, le=2)
    precision_min: float = Field(0.6, ge=0, le=1)
    recall_min: float = Field(0.4, ge=0, le=1)
    fcd_max: float = Field(50.0, gt=0)
    k: int = Field(5, ge=1, le=100)
    kid_subsets: int = Field(100, ge=1, le=10_000)        # KID's mean and std over this many draws
    kid_subset_size: int = Field(1000, ge=2, le=100_000)  # of this many images each (capped at num_samples)
    # The L1 figures (memorization, copying test, diversity, near duplicates) on this many
    # of the generated and of the held-out images; 0: all num_samples. Every query still
    # searches the whole training set.
    l1_samples: int = Field(0, ge=0, le=100_000)


SECTIONS: dict[str, type[_Section]] = {
    "prepare": PrepareParams,
    "train": TrainParams,
    "judge": JudgeParams,
    "evaluate": EvaluateParams,
}
P = TypeVar("P", bound=_Section)


def flat(section: str, model: _Section) -> dict[str, object]:
    """One section's params as MLflow logs them: `section.key` -> value."""
    if isinstance(model, TrainParams):
        return model.flat()
    return {f"{section}.{k}": v for k, v in model.model_dump().items()}


def _describe(section: str, err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        key = ".".join(str(p) for p in (section, *e["loc"]))
        got = "" if e["type"] == "missing" or not e["loc"] else f" (got {e.get('input')!r})"
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
