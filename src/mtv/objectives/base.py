"""The objective plug-in interface and its registry.

An objective is an `nn.Module` subclass of `Objective` that registers itself with `@register`. It names its config
section and its pydantic config class, says what it needs from the shared towers (`Needs`), which ViewDecoder
options or extra sample fields it reads, its per-step schedule, and returns *unweighted* named terms from
`forward`; `MultiTask` multiplies each term by the objective's λ (`weights`). Nothing else in the package (loop,
checkpoints, export, `mtv ablate`) names an objective: they iterate over `registered()`.

Built-in objectives live in this package and are found by importing its modules; others register from anywhere
(a test file, a user's module) or through the ``mtv.objectives`` entry-point group of an installed package.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Callable, ClassVar

import numpy as np
import torch
from pydantic import BaseModel
from torch import nn
from torch.distributed import ProcessGroup
from transformers import SiglipModel

from mtv.errors import MTVError


@dataclass(frozen=True)
class Needs:
    """What an objective reads from the one pass of the towers; `MultiTask` runs the union of the active ones."""

    layers: tuple[int, ...] = ()  # encoder layers (0-based) whose outputs it reads
    second_view: bool = False  # the batch's second global view goes through the student beside the clean one
    mask_token: bool = False  # patches where `Batch.masks` is True become the objective's ``mask_token``
    captions: bool = False  # the text tower's embedding of each caption
    phrases: bool = False  # the text tower's embedding of the batch's distinct box phrases
    logit: bool = False  # the SiglipModel's logit scale and bias are trained


@dataclass(frozen=True)
class Freeze:
    """Parameters of an objective (names under it) that keep lr 0 before 0-based step ``until``: DINOv2 holds its
    prototype layer still while the rest of the head finds its feet."""

    params: tuple[str, ...]
    until: int


@dataclass
class Towers:
    """The towers' outputs of one forward, read by every active objective."""

    model: SiglipModel
    vision: Any  # `VisionOutput` of the student on ``pixels`` (clean rows first, then the second view if asked)
    pixels: torch.Tensor  # what the student saw, before masking
    batch_size: int  # rows of the clean view
    layers: dict[int, torch.Tensor] = field(default_factory=dict)  # requested layer -> (B, N, D), clean rows
    captions: torch.Tensor | None = None  # (B, E) L2-normalised
    phrases: torch.Tensor | None = None  # (U, E) L2-normalised
    group: ProcessGroup | None = None  # the ranks whose batches form the global batch (None: this process)

    @property
    def clean_tokens(self) -> torch.Tensor:
        return self.vision.tokens[: self.batch_size]


class Objective(nn.Module):
    """Base of every objective. Subclasses set the class attributes and override what they use."""

    name: ClassVar[str]  # its config section, its key in checkpoints and exports, its prefix in `mtv ablate`
    title: ClassVar[str]  # how tables and ablations label it
    order: ClassVar[int]  # modules are built, and terms summed, in this order (the paper numbers 1-4)
    Config: ClassVar[type[BaseModel]]  # its config section; must have ``enabled: bool``
    labels: ClassVar[tuple[str, ...]] = ()  # shard labels it learns from (counted as missing by the decoder)
    exported: ClassVar[bool] = False  # the trained module ships in the export's heads.safetensors

    cfg: BaseModel
    needs: Needs = Needs()

    @classmethod
    def build(cls, cfg: BaseModel, model: SiglipModel) -> "Objective":
        """The objective sized for ``model``'s towers."""
        raise NotImplementedError

    @staticmethod
    def decoder_options(cfg: BaseModel, image_size: int, patch_size: int) -> dict:
        """Keyword arguments of `ViewDecoder` this objective sets (e.g. ``max_boxes``)."""
        return {}

    @staticmethod
    def sample_fields(cfg: BaseModel) -> Callable | None:
        """A picklable ``(raw, image, rng) -> {name: tensor}`` for fields ViewDecoder does not read itself; they
        reach `forward` as ``batch.extra[name]``."""
        return None

    def idles_at_start(self) -> bool:
        """True when its parameters get no gradient in early steps (DDP must then look for unused ones)."""
        return False

    def schedule(self, step: int, total_steps: int) -> Any | None:
        """Its settings at 0-based ``step``; None switches it off for that step."""
        return True

    def freezes(self, total_steps: int) -> dict[str, Freeze]:
        """Its parameter freezes by name; the optimiser's schedule table logs each as ``frozen_<objective>_<name>``."""
        return {}

    def scalars(self, schedule: Any) -> dict[str, float]:
        """Schedule values logged at each log step."""
        return {}

    def step_inputs(self, schedule: Any, batch_size: int, grid: tuple[int, int],
                    rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """Random per-micro-step inputs drawn on the host (e.g. iBOT masks), as `Batch` fields."""
        return {}

    def before_step(self, model: SiglipModel, schedule: Any) -> None:
        """Called once per optimiser step, before its first forward."""

    def weights(self) -> dict[str, float]:
        """λ of each term it returns."""
        raise NotImplementedError

    def forward(self, towers: Towers, batch, schedule: Any) -> dict[str, torch.Tensor]:
        """Unweighted named loss terms."""
        raise NotImplementedError

    def after_step(self, model: SiglipModel, schedule: Any) -> None:
        """Called after each optimiser step (EMA updates, clamps)."""


_REGISTRY: dict[str, type[Objective]] = {}
_discovered = False


def register(cls: type[Objective]) -> type[Objective]:
    """Class decorator: makes ``cls`` an objective of every later config, run and export."""
    for attr in ("name", "title", "order", "Config"):
        if not hasattr(cls, attr):
            raise TypeError(f"objective {cls.__name__} must set the class attribute {attr}")
    if "enabled" not in cls.Config.model_fields:
        raise TypeError(f"objective {cls.name}: its Config needs an `enabled` field")
    known = _REGISTRY.get(cls.name)
    if known is not None and known.__qualname__ != cls.__qualname__:
        raise TypeError(f"objective name {cls.name!r} is taken by {known.__module__}.{known.__qualname__}")
    _REGISTRY[cls.name] = cls
    return cls


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def _discover() -> None:
    """Imports this package's modules (built-ins register on import) and the entry points of installed plug-ins."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    package = importlib.import_module("mtv.objectives")
    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"mtv.objectives.{info.name}")
    for ep in entry_points(group="mtv.objectives"):
        try:
            ep.load()
        except Exception as e:  # a broken third-party plug-in must not take the built-ins down
            raise MTVError(f"objective plug-in {ep.name} ({ep.value}) failed to load: {e}") from None


def registered() -> dict[str, type[Objective]]:
    """Every objective class by name, in `order`."""
    _discover()
    return dict(sorted(_REGISTRY.items(), key=lambda kv: (kv[1].order, kv[0])))
