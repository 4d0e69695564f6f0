"""The run's AdamW and the rule that gives each trainable tensor its lr factor, weight decay and freeze.

DINOv2's recipe (``dinov2/utils/param_groups.py``), on the shared SigLIP: the vision tower's patch and position
embeddings (and an objective's mask token, which replaces patch embeddings) are layer 0, encoder block ``i``
(0-based) is layer ``i + 1``, the final norm and pooling head layer ``L + 1``; a tensor of layer ``k`` trains at
``layer_decay ** (L + 1 - k)`` of the lr, the patch embedding at ``patch_embed_lr_mult`` times that. The text
tower, the logit scale/bias and the objectives' heads get the full lr, as DINOv2's heads do. Every tensor under
2-D (biases, norms, scalars, mask token) and every name ``optim.no_weight_decay`` matches gets no weight decay.

Groups follow the model's structure (layer, patch embedding, decay, freeze), not the factors' values, so a
resumed run may change ``layer_decay`` or ``patch_embed_lr_mult`` as it may change ``lr``: the schedule table
(`mtv.train.schedule`) sets every group's lr and weight decay at each step from the config.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

from mtv.config import OptimConfig, TrainConfig
from mtv.errors import MTVError
from mtv.objectives.multitask import MultiTask


@dataclass(frozen=True)
class GroupRule:
    """What a parameter group's tensors share: ``lr_factor`` of the step's lr, whether they decay, and the
    freeze (``<objective>_<name>``) that holds them at lr 0 until step ``frozen_until``."""

    lr_factor: float
    decay: bool
    freeze: str | None = None
    frozen_until: int = 0


def vision_layer(name: str, num_layers: int) -> int | None:
    """Layer id of a `SiglipModel` parameter name in DINOv2's numbering, None outside the vision tower."""
    if not name.startswith("vision_model."):
        return None
    if name.startswith("vision_model.embeddings."):
        return 0
    found = re.match(r"vision_model\.encoder\.layers\.(\d+)\.", name)
    return int(found.group(1)) + 1 if found else num_layers + 1


def scaled_lr(cfg: OptimConfig, global_batch: int) -> float:
    """``optim.lr`` scaled to the global batch (images per optimiser step over all ranks)."""
    ratio = global_batch / cfg.lr_reference_batch
    return cfg.lr * {"none": 1.0, "sqrt": math.sqrt(ratio), "linear": ratio}[cfg.lr_scaling]


def param_groups(task: MultiTask, cfg: TrainConfig) -> tuple[list[dict], list[GroupRule]]:
    """AdamW parameter groups of ``task``'s trainable tensors and the rule of each, in the same order."""
    optim = cfg.optim
    num_layers = task.model.config.vision_config.num_hidden_layers
    frozen, tower_inputs = {}, set()
    for objective_name, objective in task.objectives.items():
        if objective.needs.mask_token:
            tower_inputs.add(f"objectives.{objective_name}.mask_token")
        for key, freeze in objective.freezes(cfg.steps).items():
            for param in freeze.params:
                frozen[f"objectives.{objective_name}.{param}"] = (f"{objective_name}_{key}", freeze.until)
    patterns = [re.compile(p) for p in optim.no_weight_decay]
    matched: set[str] = set()
    groups: dict[tuple, tuple[dict, GroupRule]] = {}
    for name, param in task.named_parameters():
        if not param.requires_grad:
            continue
        local = name.removeprefix("model.")
        layer = 0 if name in tower_inputs else vision_layer(local, num_layers)
        patch = local.startswith("vision_model.embeddings.patch_embedding.")
        hits = {p.pattern for p in patterns if p.search(name)}
        matched |= hits
        decay = param.ndim >= 2 and not hits
        freeze, until = frozen.get(name, (None, 0))
        factor = 1.0 if layer is None else optim.layer_decay ** (num_layers + 1 - layer)
        key = (layer, patch, decay, freeze)
        if key not in groups:
            rule = GroupRule(factor * optim.patch_embed_lr_mult if patch else factor, decay, freeze, until)
            groups[key] = ({"params": []}, rule)
        groups[key][0]["params"].append(param)
    if unmatched := [p.pattern for p in patterns if p.pattern not in matched]:
        raise MTVError(f"optim.no_weight_decay: {', '.join(map(repr, unmatched))} matches no trainable parameter "
                       f"(names look like {next(n for n, _ in task.named_parameters())!r}); fix or remove it")
    if missing := sorted(set(frozen) - {n for n, p in task.named_parameters() if p.requires_grad}):
        raise MTVError(f"objective freezes name {missing[0]!r}, which is not a trainable parameter")
    return [g for g, _ in groups.values()], [r for _, r in groups.values()]


def build_optimizer(task: MultiTask, cfg: TrainConfig) -> tuple[torch.optim.AdamW, list[GroupRule]]:
    """AdamW over `param_groups`; every group's lr and weight decay are set by the schedule table each step."""
    groups, rules = param_groups(task, cfg)
    return torch.optim.AdamW(groups, lr=cfg.optim.lr, betas=cfg.optim.betas), rules
