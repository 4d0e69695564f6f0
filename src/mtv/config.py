"""Typed, validated run configuration: a YAML file plus ``key=value`` overrides.

Every knob has its default here; a config file names only what it changes. Unknown keys and bad values are
one-line errors naming the file and the key.
"""

from __future__ import annotations

import os
import re
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mtv.errors import MTVError
from mtv.objectives.base import registered


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    train: str = Field(description="training shards: directory, glob, brace pattern or file")
    workers: int = Field(2, ge=0, description="decoding processes per rank")
    shuffle_buffer: int = Field(1000, ge=1)
    max_skip_fraction: float = Field(0.05, ge=0.0, le=1.0, description="stop when more samples than this fail")
    flip: float = Field(0.5, ge=0, le=1, description="horizontal flip probability of the clean view "
                        "('left'/'right' swapped in caption and phrases)")
    crop_scale: tuple[float, float] = Field((1.0, 1.0), description="area fraction (min, max) of a random "
                                            "resized crop of the clean view, aspect 3/4-4/3, that carries its boxes "
                                            "and depth; (1, 1) keeps the whole image")

    @field_validator("crop_scale")
    @classmethod
    def _scale(cls, scale: tuple[float, float]) -> tuple[float, float]:
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"data.crop_scale must satisfy 0 < low <= high <= 1 (got {scale[0]}, {scale[1]})")
        return scale
    min_samples_for_skip_check: int = Field(500, ge=1)
    max_missing_label_fraction: float = Field(0.5, ge=0.0, le=1.0, description="stop when more used samples "
                                              "than this lack the depth or boxes an enabled objective needs")


class ModelConfig(_Section):
    preset: Literal["micro", "tiny", "small", "base", "large"] = "tiny"
    init: str | None = Field(None, description="SiglipModel directory (or hub id) to start from: its weights, "
                             "tokenizer, image processor and logit scale/bias; overrides preset, config, "
                             "tokenizer and text_length")
    image_size: int | None = Field(None, ge=1, description="training resolution instead of the preset's or "
                                   "model.init's (a multiple of the patch size; model.init's position "
                                   "embeddings are interpolated)")
    init_skip: list[str] = Field(default_factory=list, description="regexes of tensor names model.init leaves "
                                 "freshly initialised, e.g. '^text_model\\.' for a new text tower")
    config: str | None = Field(None, description="HF SiglipConfig dir or json; overrides preset")
    tokenizer: str | None = Field(None, description="existing SigLIP tokenizer dir; None trains one on captions")
    vocab_size: int = Field(1000, ge=32)
    text_length: int = Field(64, ge=8, description="padding length, as the processor's model_max_length")
    tokenizer_captions: int = Field(20000, ge=10, description="captions read to train the tokenizer")
    init_logit_scale: float = Field(10.0, gt=0)
    init_logit_bias: float = -10.0
    max_logit_scale: float = Field(100.0, gt=0, description="t = exp(t') is clamped to [1, this] after each step")


class OptimConfig(_Section):
    """AdamW with warm-up + cosine lr and, optionally, DINOv2's recipe (layer_decay 0.9, patch_embed_lr_mult 0.2,
    weight_decay 0.04 -> weight_decay_end 0.4, lr_scaling sqrt, ssl.freeze_prototypes_steps); the defaults leave
    every part of it off."""

    lr: float = Field(1e-3, gt=0, description="peak lr (for a global batch of lr_reference_batch when lr_scaling "
                      "is on)")
    lr_scaling: Literal["none", "sqrt", "linear"] = Field(
        "none", description="scale lr by (global batch / lr_reference_batch) or its square root (DINOv2: sqrt)")
    lr_reference_batch: int = Field(1024, ge=1, description="the global batch optim.lr is meant for")
    layer_decay: float = Field(1.0, gt=0, le=1, description="vision block j (1-based) of L trains at lr x "
                               "layer_decay^(L+1-j), the patch/position embeddings and mask token at ^(L+1), the "
                               "final norm and pooling head at lr, as the text tower and objective heads (DINOv2: 0.9)")
    patch_embed_lr_mult: float = Field(1.0, ge=0, description="extra lr factor of the patch embedding (DINOv2: 0.2)")
    weight_decay: float = Field(1e-4, ge=0, description="weight decay (at step 0 when weight_decay_end is set)")
    weight_decay_end: float | None = Field(None, ge=0, description="cosine from weight_decay to this over the run "
                                           "(DINOv2: 0.04 -> 0.4); None keeps weight_decay constant")
    no_weight_decay: list[str] = Field(default_factory=list, description="regexes of parameter names that get no "
                                       "weight decay besides every tensor under 2-D (biases, norms, scalars, mask "
                                       "token), e.g. 'position_embedding'")
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = Field(100, ge=0)
    min_lr_ratio: float = Field(0.0, ge=0, le=1)
    grad_clip: float = Field(1.0, ge=0, description="0 disables clipping")
    accum_steps: int = Field(1, ge=1)

    @field_validator("no_weight_decay")
    @classmethod
    def _patterns(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(f"optim.no_weight_decay: {pattern!r} is not a regular expression ({e})") from None
        return patterns


class EvalConfig(_Section):
    data: str | None = Field(None, description="held-out shards `mtv ablate` evaluates every rung on")
    probe_train: str | None = Field(None, description="shards the dense probes are fitted on (default: data.train)")
    suite: str = Field("world", description="`mtv eval --suite` value: world, real, or a list of probes")
    max_samples: int | None = Field(None, ge=1, description="cap on evaluated samples")
    every: int | None = Field(None, ge=1, description="during training: run eval.during on eval.data every K steps "
                              "and at the last step, logged as eval/<metric>")
    during: str = Field("zeroshot,retrieval", description="the probes eval.every runs (comma-separated)")


class TrainConfig(BaseModel):
    """The run's settings; each registered objective adds its own section under its name (``ssl.*``, ...)."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    run_dir: str
    data: DataConfig
    model: ModelConfig = ModelConfig()
    optim: OptimConfig = OptimConfig()
    eval: EvalConfig = EvalConfig()
    seed: int = 0
    steps: int = Field(gt=0)
    batch_size: int = Field(gt=0, description="per rank and per micro-step")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field("auto", description="auto: bf16 where supported")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = Field(None, ge=1, description="torch intra-op threads per rank")
    parallel: Literal["ddp", "fsdp"] = Field("ddp", description="under torchrun: ddp replicates the model on "
                                             "every rank; fsdp (FSDP2) shards each transformer block and its "
                                             "optimiser state, and checkpoints in torch.distributed.checkpoint form")
    activation_checkpointing: bool = Field(False, description="recompute each transformer block of the trained "
                                           "towers in backward instead of keeping its activations")
    compile: bool = Field(False, description="torch.compile the step's forward and backward")
    compile_backend: str = Field("inductor", description="torch.compile backend (aot_eager: no code generation)")
    log_every: int = Field(10, ge=1)
    ckpt_every: int = Field(200, ge=1)
    keep_ckpts: int = Field(2, ge=1)
    max_nonfinite_steps: int = Field(3, ge=0, description="steps skipped for a NaN/inf loss term before the run stops")

    @model_validator(mode="before")
    @classmethod
    def _objective_sections(cls, data: Any) -> Any:
        """Each objective's section validated by its own config class; any other unknown key is refused."""
        if not isinstance(data, dict):
            return data
        objectives = registered()
        data = dict(data)
        for key in data:
            if key not in cls.model_fields and key not in objectives:
                raise ValidationError.from_exception_data(cls.__name__, [
                    {"type": "extra_forbidden", "loc": (key,), "input": data[key]}])
        for name, objective in objectives.items():
            section = data.pop(name, {})  # re-inserted in the objectives' order
            if isinstance(section, BaseModel):
                section = section.model_dump()
            try:
                data[name] = objective.Config.model_validate(section)
            except ValidationError as e:
                raise ValidationError.from_exception_data(cls.__name__, [
                    {"type": err["type"], "loc": (name, *err["loc"]), "input": err.get("input"),
                     **({"ctx": err["ctx"]} if "ctx" in err else {})} for err in e.errors()]) from None
        return data

    def objective_configs(self) -> dict[str, BaseModel]:
        """Every registered objective's section by name, in their order."""
        return {name: getattr(self, name) for name in registered()}

    @model_validator(mode="after")
    def _check(self) -> "TrainConfig":
        if not any(section.enabled for section in self.objective_configs().values()):
            raise ValueError("every objective is switched off: enable at least one of "
                             + ", ".join(registered()))
        if self.optim.warmup_steps >= self.steps:
            raise ValueError(f"optim.warmup_steps ({self.optim.warmup_steps}) must be below steps ({self.steps})")
        if self.model.init_skip and not self.model.init:
            raise ValueError("model.init_skip names tensors of model.init, which is unset; set model.init or remove "
                             "model.init_skip")
        if self.eval.every and not self.eval.data:
            raise ValueError("eval.every needs eval.data: the held-out shards (or benchmark root) to evaluate on")
        return self


def _set(tree: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for p in parents:
        node = tree.setdefault(p, {})
        if not isinstance(node, dict):
            raise MTVError(f"override {dotted}: {p} is not a section")
        tree = node
    tree[leaf] = value


def parse_overrides(items: list[str]) -> dict:
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise MTVError(f"override {item!r}: expected key=value, e.g. optim.lr=3e-4")
        key, raw = item.split("=", 1)
        _set(out, key.strip(), yaml.safe_load(raw) if raw else None)
    return out


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _first_error(source: str, err: ValidationError) -> MTVError:
    e = err.errors()[0]
    if e["type"] == "value_error":
        return MTVError(f"{source}: {e['msg'].removeprefix('Value error, ')}")
    where = ".".join(str(p) for p in e["loc"]) or "(top level)"
    if e["type"] == "extra_forbidden":
        return MTVError(f"{source}: unknown key {where}; check its spelling against `mtv train --help-config`")
    if e["type"] == "missing":
        return MTVError(f"{source}: missing required key {where}")
    return MTVError(f"{source}: {where}: {e['msg']} (got {e.get('input')!r})")


def build_config(tree: dict, source: str = "config") -> TrainConfig:
    try:
        return TrainConfig.model_validate(tree)
    except ValidationError as err:
        raise _first_error(source, err) from None


def load_config(path: str | os.PathLike, overrides: list[str] | None = None) -> TrainConfig:
    path = str(path)
    if not os.path.isfile(path):
        raise MTVError(f"{path}: config file not found; pass --config with a YAML file (see src/mtv/configs/)")
    try:
        with open(path, encoding="utf-8") as f:
            tree = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        raise MTVError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    except UnicodeDecodeError as e:
        raise MTVError(f"{path}: not UTF-8 text (byte {e.start}); save the config as UTF-8") from None
    if not isinstance(tree, dict):
        raise MTVError(f"{path}: expected a mapping of keys at the top level")
    tree = _merge(tree, parse_overrides(overrides or []))
    return build_config(tree, source=path)


def dump_config(cfg: TrainConfig, path: str | os.PathLike) -> None:
    from mtv.atomic import write_text

    write_text(path, yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), "run_dir")


def first_difference(saved: dict, now: dict, skip: frozenset[str] = frozenset(),
                     prefix: str = "") -> tuple[str, Any, Any] | None:
    """The first dotted key of a saved config whose value ``now`` does not share, with both values, or None.
    Only ``saved``'s keys count: one added since, which the saved run could not have set, is no difference."""
    for key, value in saved.items():
        name = prefix + key
        if name in skip:
            continue
        if isinstance(value, dict) and isinstance(now.get(key), dict):
            if found := first_difference(value, now[key], skip, name + "."):
                return found
        elif now.get(key) != value:
            return name, value, now.get(key)
    return None


def describe() -> str:
    """Every key with its default and meaning, for `mtv train --help-config`."""
    lines = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                walk(ann, f"{prefix}{name}.")
                continue
            default = "(required)" if field.is_required() else repr(field.default)
            desc = f"  # {field.description}" if field.description else ""
            lines.append(f"{prefix}{name} = {default}{desc}")

    walk(TrainConfig, "")
    for name, objective in registered().items():
        walk(objective.Config, f"{name}.")
    return "\n".join(lines)
