"""Objective 1: sigmoid image–text contrastive learning on the SigLIP towers."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import SiglipModel

from mtv.losses import distributed_sigmoid_loss
from mtv.models.vision import encode_images


class VisionLanguage(nn.Module):
    """Wraps the whole `SiglipModel` so that DDP sees one module whose every parameter (logit bias included)
    takes part in the loss."""

    def __init__(self, model: SiglipModel, distributed: str = "ring", max_logit_scale: float = 100.0):
        super().__init__()
        self.model, self.distributed = model, distributed
        self.max_log_scale = math.log(max_logit_scale)

    def embed(self, pixel_values: torch.Tensor, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        image = encode_images(self.model.vision_model, pixel_values).pooled
        return F.normalize(image.float(), dim=-1), self.embed_text(input_ids)

    def embed_text(self, input_ids: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model.text_model(input_ids=input_ids).pooler_output.float(), dim=-1)

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        image, text = self.embed(pixel_values, input_ids)
        scale, bias = self.model.logit_scale.float().exp(), self.model.logit_bias.float()
        return {"loss_vl": distributed_sigmoid_loss(image, text, scale, bias, mode=self.distributed)}

    @torch.no_grad()
    def clamp_(self) -> None:
        """Keeps t = exp(t') in [1, max] after each step, as open_clip does."""
        self.model.logit_scale.clamp_(0.0, self.max_log_scale)
