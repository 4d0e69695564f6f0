"""Objective 2: self-distillation (DINO) + masked patch prediction (iBOT) + KoLeo against an EMA teacher.

The student tower belongs to the shared `SiglipModel` and runs once per step in the multi-task module; this
module receives its outputs, runs the teacher, and owns everything else that is training-only: the student SSL
head(s), the mask token, the teacher (tower + heads) and the centring state. None of it is exported.

Views, per image: [clean view; global view 2] at training resolution, plus ``n_local`` local crops.
- ``dinov2``: the teacher sees both global views; DINO pairs every student view with every other teacher view;
  iBOT on the masked global-2 views; KoLeo on each global view's pooled tokens.
- ``siglip2``: the teacher sees global view 2 only; DINO pairs it with the student's local crops; iBOT on the
  masked global view 2 (50 %); switched on late (``start_fraction``), the teacher then copied from the student.
"""

from __future__ import annotations

import math
from copy import deepcopy
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn
from torch.distributed import ProcessGroup
from transformers import SiglipModel

from mtv.data.masking import batch_masks, max_masked_tokens
from mtv.data.multicrop import MultiCrop
from mtv.errors import MTVError
from mtv.losses.dino import TeacherCentering, dino_loss
from mtv.losses.ibot import ibot_loss, masked_tokens
from mtv.losses.koleo import koleo_loss
from mtv.models.ssl_head import SSLHead
from mtv.models.vision import encode_images
from mtv.objectives.base import Freeze, Needs, Objective, Towers, register

# What `variant: siglip2` changes, unless the config sets the key itself (SigLIP 2, sec. 2.3).
SIGLIP2_DEFAULTS: dict[str, Any] = dict(n_local=8, mask_probability=1.0, mask_ratio_min=0.5, mask_ratio_max=0.5,
                                        ibot_weight=0.25, koleo_weight=0.0, start_fraction=0.8)


class SSLConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    variant: Literal["dinov2", "siglip2"] = Field("dinov2", description="siglip2 changes the defaults of "
                                                  + ", ".join(SIGLIP2_DEFAULTS) + " (explicit keys win)")
    n_local: int = Field(6, ge=0, description="local crops per image")
    global_scale: tuple[float, float] = Field((0.32, 1.0), description="area fraction of global view 2")
    local_scale: tuple[float, float] = Field((0.05, 0.32), description="area fraction of local crops")
    local_fraction: float = Field(0.4, gt=0, le=1, description="local crop side / training resolution")
    prototypes: int = Field(4096, ge=2, description="DINO/iBOT prototypes (65536 at scale)")
    head_hidden: int = Field(2048, ge=1)
    bottleneck: int = Field(256, ge=1)
    head_layers: int = Field(3, ge=1, description="linear layers of the head's MLP")
    separate_ibot_head: bool = Field(False, description="iBOT gets its own head instead of sharing DINO's")
    student_temp: float = Field(0.1, gt=0)
    teacher_temp_start: float = Field(0.04, gt=0)
    teacher_temp_end: float = Field(0.07, gt=0)
    teacher_temp_warmup_fraction: float = Field(0.3, ge=0, le=1, description="of the SSL phase")
    momentum_start: float = Field(0.992, ge=0, le=1, description="teacher EMA, cosine to 1 (short runs: 0.996)")
    centering: Literal["sinkhorn", "ema"] = "sinkhorn"
    center_momentum: float = Field(0.9, ge=0, le=1, description="EMA centring only")
    sinkhorn_iters: int = Field(3, ge=1)
    mask_probability: float = Field(0.5, ge=0, le=1, description="fraction of global-2 views masked for iBOT")
    mask_ratio_min: float = Field(0.1, ge=0, le=1)
    mask_ratio_max: float = Field(0.5, ge=0, le=1)
    mask_min_patches: int = Field(4, ge=1, description="smallest mask block")
    mask_min_aspect: float = Field(0.3, gt=0, le=1, description="block aspect within [this, 1/this]")
    dino_weight: float = Field(1.0, ge=0, description="0 skips the term")
    ibot_weight: float = Field(1.0, ge=0, description="0 skips the term")
    koleo_weight: float = Field(0.1, ge=0, description="0 skips the term")
    loss_scale: float = Field(1.0, ge=0, description="multiplies every SSL term (SigLIP 2: 0.25 for B, 0.5 for L)")
    start_fraction: float = Field(0.0, ge=0, lt=1, description="fraction of training before SSL switches on")
    freeze_prototypes_steps: int = Field(0, ge=0, description="the heads' prototype (last) layers keep lr 0 for "
                                         "the first this many SSL steps (DINOv2: one epoch)")

    @model_validator(mode="before")
    @classmethod
    def _variant_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("variant") == "siglip2":
            data = {**SIGLIP2_DEFAULTS, **data}
        return data

    @model_validator(mode="after")
    def _check(self) -> "SSLConfig":
        for name in ("global_scale", "local_scale"):
            low, high = getattr(self, name)
            if not 0 < low <= high <= 1:
                raise ValueError(f"ssl.{name} must satisfy 0 < low <= high <= 1 (got {low}, {high})")
        if self.mask_ratio_min > self.mask_ratio_max:
            raise ValueError("ssl.mask_ratio_min must not exceed ssl.mask_ratio_max")
        if self.variant == "siglip2" and self.n_local == 0 and self.dino_weight:
            raise ValueError("ssl.variant siglip2 distils into local crops: ssl.n_local must be > 0")
        return self

    def multicrop(self, image_size: int, patch_size: int) -> MultiCrop:
        return MultiCrop(image_size, patch_size, self.n_local, self.global_scale, self.local_scale,
                         self.local_fraction)


def view_masks(cfg: SSLConfig, batch: int, grid: tuple[int, int], rng: np.random.Generator) -> torch.Tensor:
    """(2B, N) student mask for [clean; global 2]: the clean view stays whole (the other objectives read it)."""
    clean = torch.zeros(batch, grid[0] * grid[1], dtype=torch.bool)
    masked = batch_masks(batch, grid, cfg.mask_probability, rng, cfg.mask_ratio_min, cfg.mask_ratio_max,
                         cfg.mask_min_patches, cfg.mask_min_aspect)
    return torch.cat([clean, masked])


def teacher_momentum(progress: float, start: float = 0.992) -> float:
    """Cosine from ``start`` at progress 0 to 1 at progress 1: the teacher freezes as training ends."""
    return 1 - (1 - start) * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0))) / 2


def teacher_temperature(progress: float, start: float = 0.04, end: float = 0.07, warmup: float = 0.3) -> float:
    """Linear warm-up from ``start`` to ``end`` over the first ``warmup`` of the schedule, then ``end``: a sharp
    teacher early keeps the untrained network's near-uniform outputs from becoming the targets."""
    if progress >= warmup:
        return end
    return start + (end - start) * max(progress, 0.0) / warmup


@dataclass(frozen=True)
class SSLStep:
    teacher_temp: float
    momentum: float
    starts: bool  # first SSL step: copy the student into the teacher first (update_teacher(tower, 0.0))


def ssl_step(cfg: SSLConfig, step: int, total_steps: int) -> SSLStep | None:
    """Schedules at 0-based ``step``, or None while SSL is off (before ``start_fraction`` of training).
    Both schedules run over the SSL phase only, so a late start still warms up and anneals."""
    first = round(cfg.start_fraction * total_steps)
    if not cfg.enabled or step < first:
        return None
    progress = (step - first) / max(1, total_steps - 1 - first)
    temp = teacher_temperature(progress, cfg.teacher_temp_start, cfg.teacher_temp_end,
                               cfg.teacher_temp_warmup_fraction)
    return SSLStep(temp, teacher_momentum(progress, cfg.momentum_start), step == first)


@register
class SelfSupervised(Objective):
    name, title, order, Config = "ssl", "SSL", 2, SSLConfig
    needs = Needs(second_view=True, mask_token=True)

    def __init__(self, vision_tower: nn.Module, dim: int, cfg: SSLConfig):
        super().__init__()
        self.cfg = cfg
        self.head = SSLHead(dim, cfg.prototypes, cfg.head_hidden, cfg.bottleneck, cfg.head_layers)
        self.ibot_head = (SSLHead(dim, cfg.prototypes, cfg.head_hidden, cfg.bottleneck, cfg.head_layers)
                          if cfg.separate_ibot_head else None)
        self.mask_token = nn.Parameter(torch.zeros(dim))
        # Teacher modules in the same order as `_student_modules`, which `update_teacher` relies on.
        self.teacher = nn.ModuleDict({"tower": deepcopy(vision_tower), "head": deepcopy(self.head)})
        if self.ibot_head is not None:
            self.teacher["ibot_head"] = deepcopy(self.ibot_head)
        self.teacher.requires_grad_(False).eval()
        self.dino_centering = TeacherCentering(cfg.prototypes, cfg.centering, cfg.center_momentum, cfg.sinkhorn_iters)
        self.ibot_centering = TeacherCentering(cfg.prototypes, cfg.centering, cfg.center_momentum, cfg.sinkhorn_iters)

    @classmethod
    def build(cls, cfg: SSLConfig, model: SiglipModel) -> "SelfSupervised":
        return cls(model.vision_model, model.config.vision_config.hidden_size, cfg)

    @staticmethod
    def decoder_options(cfg: SSLConfig, image_size: int, patch_size: int) -> dict:
        return {"multicrop": cfg.multicrop(image_size, patch_size)}

    def idles_at_start(self) -> bool:
        return self.cfg.start_fraction > 0

    def freezes(self, total_steps: int) -> dict[str, Freeze]:
        if not self.cfg.freeze_prototypes_steps:
            return {}
        first = round(self.cfg.start_fraction * total_steps)
        if first + self.cfg.freeze_prototypes_steps >= total_steps:
            raise MTVError(f"ssl.freeze_prototypes_steps={self.cfg.freeze_prototypes_steps} covers every SSL step "
                           f"({total_steps - first}): the prototypes would never train; lower it")
        heads = ["head"] + (["ibot_head"] if self.ibot_head is not None else [])
        return {"prototypes": Freeze(tuple(f"{h}.prototypes.weight" for h in heads),
                                     first + self.cfg.freeze_prototypes_steps)}

    def schedule(self, step: int, total_steps: int) -> SSLStep | None:
        return ssl_step(self.cfg, step, total_steps)

    def scalars(self, schedule: SSLStep) -> dict[str, float]:
        return {"teacher_temp": schedule.teacher_temp, "teacher_momentum": schedule.momentum}

    def step_inputs(self, schedule: SSLStep, batch_size: int, grid: tuple[int, int],
                    rng: np.random.Generator) -> dict[str, torch.Tensor]:
        return {"masks": view_masks(self.cfg, batch_size, grid, rng)}

    def before_step(self, model: SiglipModel, schedule: SSLStep) -> None:
        if schedule.starts:
            self.update_teacher(model.vision_model, 0.0)  # the teacher starts as a copy of the student

    def after_step(self, model: SiglipModel, schedule: SSLStep) -> None:
        self.update_teacher(model.vision_model, schedule.momentum)

    def weights(self) -> dict[str, float]:
        c = self.cfg
        return {k: c.loss_scale * w for k, w in (("loss_dino", c.dino_weight), ("loss_ibot", c.ibot_weight),
                                                 ("loss_koleo", c.koleo_weight)) if w}

    def forward(self, towers: Towers, batch, schedule: SSLStep) -> dict[str, torch.Tensor]:
        local = batch.locals
        student_local = (encode_images(towers.model.vision_model, local.flatten(0, 1)).pooled
                         if local.shape[1] else None)
        return self.loss(towers.vision.pooled, towers.vision.tokens, student_local, towers.pixels, batch.masks,
                         schedule.teacher_temp, towers.group)

    def train(self, mode: bool = True) -> "SelfSupervised":
        """The teacher always runs in eval mode: dropout would add noise to the targets."""
        super().train(mode)
        self.teacher.eval()
        return self

    def _student_modules(self, student_tower: nn.Module) -> list[nn.Module]:
        return [student_tower, self.head] + ([self.ibot_head] if self.ibot_head is not None else [])

    @torch.no_grad()
    def update_teacher(self, student_tower: nn.Module, momentum: float) -> None:
        """θ_teacher ← m θ_teacher + (1 − m) θ_student for the tower and the heads; m = 0 copies the student."""
        for teacher, student in zip(self.teacher.values(), self._student_modules(student_tower), strict=True):
            for t, s in zip(teacher.parameters(), student.parameters(), strict=True):
                t.mul_(momentum).add_(s.detach().to(t.dtype), alpha=1 - momentum)

    def loss(self, student_global: torch.Tensor, student_global_patches: torch.Tensor,
                student_local: torch.Tensor | None, teacher_pixels: torch.Tensor, masks: torch.Tensor,
                teacher_temp: float, group: ProcessGroup | None = None) -> dict[str, torch.Tensor]:
        """Unweighted loss terms ("loss_dino", "loss_ibot", "loss_koleo"; weight-0 terms are not computed).

        ``student_global`` (2B, D) and ``student_global_patches`` (2B, N, D): the student tower on
        [clean; global 2] with ``masks`` (2B, N) applied through ``mask_token``. ``student_local``
        (B * n_local, D), image-major (``local_pixels.flatten(0, 1)`` of a (B, n_local, 3, s, s) batch), or None.
        ``teacher_pixels`` (2B, 3, S, S): the same [clean; global 2] images, unmasked. ``group``: the ranks whose
        batches share the teacher's centring (None: this process)."""
        cfg, b = self.cfg, student_global.shape[0] // 2
        dinov2 = cfg.variant == "dinov2"
        rows = slice(0, 2 * b) if dinov2 else slice(b, 2 * b)  # the views the teacher sees
        separate = self.ibot_head is not None
        student_ibot_head = self.ibot_head if separate else self.head
        teacher_ibot_head = self.teacher["ibot_head"] if separate else self.teacher["head"]
        with torch.no_grad():
            teacher = encode_images(self.teacher["tower"], teacher_pixels[rows])
        terms: dict[str, torch.Tensor] = {}
        if cfg.dino_weight:
            with torch.no_grad():
                targets = self.dino_centering(self.teacher["head"](teacher.pooled), teacher_temp, group=group)
            views = [student_global.unflatten(0, (2, b))] if dinov2 else []
            if student_local is not None and student_local.numel():
                views.append(student_local.unflatten(0, (b, -1)).transpose(0, 1))
            if not views:
                raise ValueError("ssl: the siglip2 variant needs the student's local crops (student_local)")
            loss = dino_loss(self.head(torch.cat(views)), targets.unflatten(0, (-1, b)), cfg.student_temp, dinov2)
            terms["loss_dino"] = loss
        if cfg.ibot_weight:
            # only global view 2 is ever masked; its tokens go into a fixed number of slots (no boolean indexing)
            m = masks[b:]
            slots = max_masked_tokens(b, m.shape[1], cfg.mask_probability, cfg.mask_ratio_max)
            index, real = masked_tokens(m, slots)
            teacher_tokens = (teacher.tokens[b:] if dinov2 else teacher.tokens).flatten(0, 1)
            with torch.no_grad():
                targets = self.ibot_centering(teacher_ibot_head(teacher_tokens[index]), teacher_temp, real, group)
            student = student_ibot_head(student_global_patches[b:].flatten(0, 1)[index])
            # the divisor is the maskable views (global view 2; the clean view never is), as DINOv2's all global crops
            terms["loss_ibot"] = ibot_loss(student, targets, m, index, cfg.student_temp)
        if cfg.koleo_weight:
            # within a view: never an image's twin
            terms["loss_koleo"] = sum(koleo_loss(view) for view in student_global.chunk(2))
        return terms
