"""All four objectives on one shared SigLIP: the towers run once per step, every enabled objective reads their
outputs, and the total is ``Σ_k λ_k L_k``. A switched-off objective builds no module and computes nothing."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import SiglipModel

from mtv.heads import build_heads, text_dim
from mtv.losses import distributed_sigmoid_loss
from mtv.models.vision import encode_images
from mtv.objectives.self_supervised import SelfSupervised, SSLStep


class MultiTask(nn.Module):
    """``model`` is exported as it is; ``ssl``, ``grounding`` and ``depth`` are the training-only parts (the
    grounding and depth heads are also exported, beside the model, for `mtv predict`)."""

    def __init__(self, model: SiglipModel, cfg):
        super().__init__()
        self.model, self.cfg = model, cfg
        self.text_dim = text_dim(model)
        self.ssl = (SelfSupervised(model.vision_model, model.config.vision_config.hidden_size, cfg.ssl)
                    if cfg.ssl.enabled else None)
        heads = build_heads(model, cfg.grounding if cfg.grounding.enabled else None,
                            cfg.depth if cfg.depth.enabled else None)
        self.grounding, self.depth = heads.get("grounding"), heads.get("depth")
        self.max_log_scale = math.log(cfg.model.max_logit_scale)
        if not cfg.vl.enabled:  # DDP must not wait for gradients that never come
            model.logit_scale.requires_grad_(False)
            model.logit_bias.requires_grad_(False)
            if not cfg.grounding.enabled:
                model.text_model.requires_grad_(False)

    def embed_text(self, input_ids: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model.text_model(input_ids=input_ids).pooler_output.float(), dim=-1)

    def forward(self, batch: dict, ssl_step: SSLStep | None = None, masks: torch.Tensor | None = None,
                phrase_ids: torch.Tensor | None = None, phrase_index: torch.Tensor | None = None
                ) -> dict[str, torch.Tensor]:
        """Weighted loss terms of the enabled objectives.

        ``ssl_step`` None means SSL is off this step (disabled, or before its start). ``phrase_ids`` (U, L) are
        the batch's distinct box phrases, tokenised; ``phrase_index`` (B, M) points each box at its phrase."""
        cfg, clean = self.cfg, batch["pixel_values"]
        b = clean.shape[0]
        ssl_on = self.ssl is not None and ssl_step is not None
        pixels = torch.cat([clean, batch["global2"]]) if ssl_on else clean
        out = encode_images(self.model.vision_model, pixels, mask=masks if ssl_on else None,
                            mask_token=self.ssl.mask_token if ssl_on else None,
                            layers=self.depth.layers if self.depth is not None else ())
        terms: dict[str, torch.Tensor] = {}

        # One text-tower pass over the captions (objective 1) and the batch's distinct box phrases (objective 3).
        need_phrases = self.grounding is not None and phrase_ids is not None
        captions = batch["input_ids"] if cfg.vl.enabled else batch["input_ids"][:0]
        ids = torch.cat([captions, phrase_ids]) if need_phrases else captions
        text = self.embed_text(ids) if len(ids) else None
        if cfg.vl.enabled:
            image = F.normalize(out.pooled[:b].float(), dim=-1)
            scale, bias = self.model.logit_scale.float().exp(), self.model.logit_bias.float()
            terms["loss_vl"] = cfg.vl.weight * distributed_sigmoid_loss(image, text[:b], scale, bias,
                                                                        mode=cfg.vl.distributed)
        if ssl_on:
            local = batch["locals"]
            student_local = (encode_images(self.model.vision_model, local.flatten(0, 1)).pooled
                             if local.shape[1] else None)
            terms.update(self.ssl(out.pooled, out.tokens, student_local, pixels, masks, ssl_step.teacher_temp))
        if self.grounding is not None:
            valid = batch["box_valid"]
            if need_phrases:
                entity = text[len(captions):][phrase_index]
            else:
                entity = out.tokens.new_zeros((*valid.shape, self.text_dim), dtype=torch.float32)
            found = self.grounding(out.tokens[:b], out.grid, batch["boxes"], valid, entity, batch["entity_ids"])
            terms.update({k: self.grounding.weights[k] * v for k, v in found.items()})
        if self.depth is not None:
            layers = [x[:b] for x in out.layers]
            found = self.depth(layers, out.grid, tuple(clean.shape[-2:]), batch["depth"], batch["depth_valid"])
            terms["loss_depth"] = cfg.depth.weight * found["loss_depth"]
        return terms

    @torch.no_grad()
    def after_step(self, ssl_step: SSLStep | None) -> None:
        """Clamps logit scales and moves the EMA teacher, after each optimiser step."""
        self.model.logit_scale.clamp_(0.0, self.max_log_scale)
        if self.grounding is not None:
            self.grounding.clamp_()
        if self.ssl is not None and ssl_step is not None:
            self.ssl.update_teacher(self.model.vision_model, ssl_step.momentum)
