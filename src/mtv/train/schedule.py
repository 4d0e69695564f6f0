"""Every per-step schedule of a run in one table: the lr (linear warm-up, cosine decay), the weight decay
(constant, or DINOv2's cosine), the parameter freezes, and each objective's own schedule (e.g. SSL's teacher
temperature and momentum). A row is a pure function of the config and the step, so a resumed run, or one with a
changed lr, gets the same row for the same step; the loop logs every row."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from mtv.config import TrainConfig
from mtv.objectives.multitask import MultiTask
from mtv.train.optim import GroupRule


def warmup_cosine(step: int, warmup: int, total: int, min_ratio: float = 0.0) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def cosine(step: int, total: int, start: float, end: float) -> float:
    """From ``start`` at step 0 towards ``end`` at step ``total`` (DINOv2's ``CosineScheduler`` without warm-up)."""
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * min(step / total, 1.0)))


@dataclass(frozen=True)
class StepSchedule:
    """One row of the table: the values of 0-based ``step``. ``plan`` is `MultiTask.plan` (the objectives that are
    on, with their schedules); ``group_lr``/``group_wd`` follow the optimiser's parameter groups."""

    step: int
    lr: float
    weight_decay: float
    frozen: dict[str, bool]
    plan: dict[str, Any]
    group_lr: tuple[float, ...]
    group_wd: tuple[float, ...]
    objective_scalars: dict[str, float]

    def apply(self, opt: torch.optim.Optimizer) -> None:
        for group, lr, wd in zip(opt.param_groups, self.group_lr, self.group_wd, strict=True):
            group["lr"], group["weight_decay"] = lr, wd

    def scalars(self) -> dict[str, float]:
        """What the logs record for this step."""
        return {"lr": self.lr, "weight_decay": self.weight_decay,
                **{f"frozen_{k}": float(v) for k, v in self.frozen.items()}, **self.objective_scalars}


class ScheduleTable:
    """``row(step)`` for a run of ``cfg`` whose optimiser was built with ``rules`` and whose peak lr is ``peak_lr``
    (`mtv.train.optim.scaled_lr`)."""

    def __init__(self, cfg: TrainConfig, task: MultiTask, rules: list[GroupRule], peak_lr: float):
        self.cfg, self.task, self.rules, self.peak_lr = cfg, task, rules, peak_lr
        self.freezes = {r.freeze: r.frozen_until for r in rules if r.freeze is not None}

    def row(self, step: int) -> StepSchedule:
        o, total = self.cfg.optim, self.cfg.steps
        lr = self.peak_lr * warmup_cosine(step, o.warmup_steps, total, o.min_lr_ratio)
        wd = o.weight_decay if o.weight_decay_end is None else cosine(step, total, o.weight_decay, o.weight_decay_end)
        frozen = {name: step < until for name, until in self.freezes.items()}
        plan = self.task.plan(step, total)
        scalars: dict[str, float] = {}
        for name, schedule in plan.items():
            scalars.update(self.task.objectives[name].scalars(schedule))
        return StepSchedule(step, lr, wd, frozen, plan,
                            tuple(0.0 if r.freeze and frozen[r.freeze] else lr * r.lr_factor for r in self.rules),
                            tuple(wd if r.decay else 0.0 for r in self.rules), scalars)
