"""Objective 4: relative inverse depth from Depth Anything V2 pseudo-labels, with a light DPT head."""

from __future__ import annotations

from typing import Literal, Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field
from transformers import SiglipModel

from mtv.losses.depth import depth_loss
from mtv.models.depth_head import DepthHead, depth_layers
from mtv.objectives.base import Needs, Objective, Towers, register


class DepthConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    enabled: bool = True
    weight: float = Field(1.0, ge=0, description="lambda of loss_depth in the total loss")
    width: int = Field(64, ge=4, description="channels of the DPT head's pyramid (256 in DPT; small for tiny)")
    normalisation: Literal["lstsq", "median"] = Field(
        "lstsq", description="align prediction to target by least-squares scale+shift (MiDaS; squared residual / 2M)"
                             " or median/MAD (Depth Anything; mean absolute residual)")
    grad_weight: float = Field(0.5, ge=0, description="weight of multi-scale gradient matching; with lstsq it is "
                                                      "MiDaS's alpha (0.5 = MiDaS's default balance)")
    scales: int = Field(4, ge=1, description="gradient-matching scales (strides 1, 2, 4, ...)")
    min_valid_fraction: float = Field(0.05, ge=0, le=1, description="images with fewer valid pixels are skipped")
    resize: Literal["bilinear", "nearest"] = Field(
        "bilinear", description="how the loader resizes depth maps (bilinear is mask-aware: NaN holes do not bleed)")


@register
class Depth(Objective):
    """Depth head + SSI loss. ``layers`` lists the tower layers to request from `encode_images`."""

    name, title, order, Config = "depth", "Depth", 4, DepthConfig
    labels, exported = ("depth",), True

    def __init__(self, cfg: DepthConfig, dim: int, num_layers: int):
        super().__init__()
        self.cfg = cfg
        self.layers = depth_layers(num_layers)
        self.head = DepthHead(dim, cfg.width)
        self.needs = Needs(layers=tuple(self.layers))

    @classmethod
    def build(cls, cfg: DepthConfig, model: SiglipModel) -> "Depth":
        vision = model.config.vision_config
        return cls(cfg, vision.hidden_size, vision.num_hidden_layers)

    @staticmethod
    def decoder_options(cfg: DepthConfig, image_size: int, patch_size: int) -> dict:
        return {"depth": True, "depth_resize": cfg.resize}

    def weights(self) -> dict[str, float]:
        return {"loss_depth": self.cfg.weight}

    def forward(self, towers: Towers, batch, schedule) -> dict[str, torch.Tensor]:
        layers = [towers.layers[i] for i in self.layers]
        image_size = tuple(batch.pixel_values.shape[-2:])
        return self.loss(layers, towers.vision.grid, image_size, batch.depth, batch.depth_valid)

    def loss(self, layers: Sequence[torch.Tensor], grid: tuple[int, int], image_size: tuple[int, int],
                target: torch.Tensor, valid: torch.Tensor) -> dict[str, torch.Tensor]:
        """``layers``: the 4 (B, N, D) outputs of `self.layers`; ``target``: (B, 1, H, W) inverse depth at
        ``image_size``, NaN where invalid; ``valid``: (B,) bool, False for images without a depth label.

        Every image goes through the head and the loss averages over the labelled ones: fixed shapes, no
        data-dependent branch. Without any label the term is a zero that still depends on every head parameter,
        so DDP sees them all used."""
        if tuple(target.shape[-2:]) != tuple(image_size):
            raise ValueError(f"depth target {tuple(target.shape[-2:])} must be at the image size {tuple(image_size)}")
        pred = self.head(list(layers), grid, image_size)
        c = self.cfg
        loss = depth_loss(pred, target, normalisation=c.normalisation, grad_weight=c.grad_weight, scales=c.scales,
                          min_valid_fraction=c.min_valid_fraction, images=valid)
        return {"loss_depth": loss}

    @torch.no_grad()
    def predict(self, layers: Sequence[torch.Tensor], grid: tuple[int, int],
                image_size: tuple[int, int]) -> torch.Tensor:
        """(B, 1, H, W) relative inverse depth: larger is nearer; scale and shift are arbitrary."""
        return self.head(layers, grid, image_size).float()
