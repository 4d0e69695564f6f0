"""Objective 1: SigLIP's sigmoid image–text loss on the clean view and its caption.

It has no parameters of its own: it trains the `SiglipModel`'s logit scale and bias (clamped by `MultiTask`)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from transformers import SiglipModel

from mtv.losses import distributed_sigmoid_loss
from mtv.objectives.base import Needs, Objective, Towers, register


class VLConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    enabled: bool = True
    weight: float = Field(1.0, ge=0, description="lambda of loss_vl in the total loss")
    distributed: Literal["ring", "gather"] = Field("ring", description="how text features cross ranks")


@register
class VisionLanguage(Objective):
    name, title, order, Config = "vl", "VL", 1, VLConfig
    needs = Needs(captions=True, logit=True)

    def __init__(self, cfg: VLConfig):
        super().__init__()
        self.cfg = cfg

    @classmethod
    def build(cls, cfg: VLConfig, model: SiglipModel) -> "VisionLanguage":
        return cls(cfg)

    def weights(self) -> dict[str, float]:
        return {"loss_vl": self.cfg.weight}

    def forward(self, towers: Towers, batch, schedule) -> dict[str, torch.Tensor]:
        model = towers.model
        image = F.normalize(towers.vision.pooled[: towers.batch_size].float(), dim=-1)
        scale, bias = model.logit_scale.float().exp(), model.logit_bias.float()
        return {"loss_vl": distributed_sigmoid_loss(image, towers.captions, scale, bias, mode=self.cfg.distributed,
                                                     group=towers.group)}
