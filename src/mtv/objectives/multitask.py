"""Every enabled objective on one shared SigLIP: the towers run once per step for the union of what the active
objectives need, each objective returns unweighted terms, and this module applies every λ: ``Σ_k λ_k L_k``. A
switched-off objective builds no module and computes nothing."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributed import ProcessGroup
from transformers import SiglipModel

from mtv.data.batch import Batch
from mtv.models.vision import encode_images
from mtv.objectives.base import Objective, Towers, registered


class MultiTask(nn.Module):
    """``model`` is exported as it is; ``objectives`` (name -> module, in their order) are the training-only parts,
    except those marked ``exported`` (grounding and depth ship beside the model for `mtv predict`). ``group``: the
    process group the losses gather over (None: one process); the engine passes it, the losses never guess it."""

    def __init__(self, model: SiglipModel, cfg, group: ProcessGroup | None = None):
        super().__init__()
        self.model, self.cfg, self.group = model, cfg, group
        self.objectives = nn.ModuleDict({name: cls.build(getattr(cfg, name), model)
                                         for name, cls in registered().items() if getattr(cfg, name).enabled})
        self.max_log_scale = math.log(cfg.model.max_logit_scale)
        needs = [o.needs for o in self.objectives.values()]
        if not any(n.logit for n in needs):  # DDP must not wait for gradients that never come
            model.logit_scale.requires_grad_(False)
            model.logit_bias.requires_grad_(False)
        if not any(n.captions or n.phrases for n in needs):
            model.text_model.requires_grad_(False)

    def __getattr__(self, name: str):
        """``task.<objective name>``: the objective's module, or None when it is switched off."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            objectives = self._modules.get("objectives")
            if objectives is not None and name in registered():
                return objectives[name] if name in objectives else None
            raise

    def plan(self, step: int, total_steps: int) -> dict[str, Any]:
        """Each enabled objective's schedule at ``step``; those that are off this step are left out."""
        found = {name: o.schedule(step, total_steps) for name, o in self.objectives.items()}
        return {name: s for name, s in found.items() if s is not None}

    def embed_text(self, input_ids: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model.text_model(input_ids=input_ids).pooler_output.float(), dim=-1)

    def forward(self, batch: Batch, plan: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Weighted loss terms of the objectives in ``plan`` (`MultiTask.plan`), in their order."""
        active: dict[str, Objective] = {n: o for n, o in self.objectives.items() if n in plan}
        towers = self._towers(batch, [o for o in active.values()])
        terms: dict[str, torch.Tensor] = {}
        for name, objective in active.items():
            weights = objective.weights()
            terms.update({k: weights[k] * v for k, v in objective(towers, batch, plan[name]).items()})
        return terms

    def _towers(self, batch: Batch, active: list[Objective]) -> Towers:
        clean, b = batch.pixel_values, batch.size
        masker = next((o for o in active if o.needs.mask_token), None)
        pixels = torch.cat([clean, batch.global2]) if any(o.needs.second_view for o in active) else clean
        layers = sorted({i for o in active for i in o.needs.layers})
        out = encode_images(self.model.vision_model, pixels, mask=batch.masks if masker is not None else None,
                            mask_token=masker.mask_token if masker is not None else None, layers=layers)
        # One text-tower pass over the captions and the batch's distinct box phrases.
        captions = batch.input_ids if any(o.needs.captions for o in active) else batch.input_ids[:0]
        phrases = batch.phrase_ids if any(o.needs.phrases for o in active) else None
        ids = torch.cat([captions, phrases]) if phrases is not None else captions
        text = self.embed_text(ids) if len(ids) else None
        n = len(captions)
        return Towers(self.model, out, pixels, b, {i: x[:b] for i, x in zip(layers, out.layers)},
                      captions=text[:n] if n else None, phrases=text[n:] if phrases is not None else None,
                      group=self.group)

    def before_step(self, plan: dict[str, Any]) -> None:
        for name, schedule in plan.items():
            self.objectives[name].before_step(self.model, schedule)

    @torch.no_grad()
    def after_step(self, plan: dict[str, Any]) -> None:
        """Clamps the logit scale and lets each active objective update itself (EMA teacher, its own clamps)."""
        self.model.logit_scale.clamp_(0.0, self.max_log_scale)
        for name, schedule in plan.items():
            self.objectives[name].after_step(self.model, schedule)
