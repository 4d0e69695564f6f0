"""Linear semantic-segmentation probe: one linear layer on frozen patch tokens, logits upsampled bilinearly to
the label map (docs/EVALUATION.md), trained with cross-entropy that ignores unlabelled pixels."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mtv.eval.metrics import IGNORE, seg_areas, seg_scores


@dataclass(frozen=True)
class ProbeBudget:
    """Everything that fixes a probe's training, recorded in the report so a number can be reproduced."""

    seed: int = 0
    epochs: int = 20
    lr: float = 5e-3
    batch_size: int = 32
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.0  # > 0: Probe3D's schedule (`warmup_cosine_factor`) per step; 0: constant lr

    def as_dict(self) -> dict:
        return asdict(self)


MIN_LR_FACTOR = 0.01  # Probe3D's cosine_decay_linear_warmup floor


def warmup_cosine_factor(step: int, total: int, warmup: float) -> float:
    """Probe3D's lr factor at optimiser step ``step`` of ``total``: linear from 1 % to 1 over ``warmup`` steps,
    then a quarter cosine from 1 down to 1 %."""
    span = 1 - MIN_LR_FACTOR
    if step <= warmup:
        return span * step / warmup + MIN_LR_FACTOR
    return span * math.cos(0.5 * math.pi * (step - warmup) / (total - warmup)) + MIN_LR_FACTOR


def fit_probe(probe: nn.Module, n: int, budget: ProbeBudget,
              batch_loss: Callable[[torch.Tensor], torch.Tensor | None]) -> nn.Module:
    """The one training loop of every probe: AdamW over seeded shuffles of ``n`` examples for the budget's
    epochs; ``batch_loss(indices)`` returns None for a batch with nothing to learn from."""
    gen = torch.Generator().manual_seed(budget.seed)
    opt = torch.optim.AdamW(probe.parameters(), lr=budget.lr, weight_decay=budget.weight_decay)
    per_epoch = math.ceil(n / budget.batch_size)
    total, warmup = budget.epochs * per_epoch, budget.warmup_epochs * per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, (lambda step: warmup_cosine_factor(step, total, warmup)) if warmup > 0 else (lambda step: 1.0))
    for _ in range(budget.epochs):
        for idx in torch.randperm(n, generator=gen).split(budget.batch_size):
            loss = batch_loss(idx)
            if loss is None:
                continue
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return probe.eval()


def _logits(probe: nn.Linear, tokens: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    x = probe(tokens.float())  # (B, T, C)
    x = x.transpose(1, 2).reshape(x.shape[0], -1, *grid)
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def train_linear_seg(tokens: torch.Tensor, grid: tuple[int, int], labels: torch.Tensor, num_classes: int,
                     budget: ProbeBudget) -> nn.Linear:
    """``tokens`` (N, T, D) frozen features, ``labels`` (N, H, W) long with ``IGNORE``; every label map is at the
    same training size, the caller resizes them (nearest) beforehand."""
    torch.manual_seed(budget.seed)
    probe = nn.Linear(tokens.shape[-1], num_classes)
    size = tuple(labels.shape[-2:])

    def batch_loss(idx: torch.Tensor) -> torch.Tensor | None:
        target = labels[idx]
        if (target == IGNORE).all():
            return None
        return F.cross_entropy(_logits(probe, tokens[idx], grid, size), target, ignore_index=IGNORE)

    return fit_probe(probe, len(tokens), budget, batch_loss)


@torch.no_grad()
def predict_seg(probe: nn.Linear, tokens: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """(B, H, W) class indices at ``size``, for (B, T, D) tokens."""
    return _logits(probe, tokens, grid, size).argmax(1)


def evaluate_seg(probe: nn.Linear, tokens: torch.Tensor, grid: tuple[int, int], labels: Sequence[torch.Tensor],
                 num_classes: int) -> dict:
    """mmseg's mIoU, pixel accuracy and per-class IoU of areas summed over the whole test set, each image scored
    at its own label size (`mtv.eval.metrics.seg_scores`)."""
    areas = torch.zeros(4, num_classes, dtype=torch.long)
    for x, y in zip(tokens, labels):
        areas += seg_areas(predict_seg(probe, x[None], grid, tuple(y.shape))[0], y, num_classes)
    return seg_scores(areas)
