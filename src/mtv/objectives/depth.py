"""Objective 4: relative inverse depth from Depth Anything V2 pseudo-labels, with a light DPT or a linear head, and
optionally a second, linear head on the final tokens."""

from __future__ import annotations

from functools import partial
from typing import Literal, Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from transformers import SiglipModel

from mtv.errors import MTVError
from mtv.losses.depth import depth_loss
from mtv.models.depth_head import DepthHead, LinearDepthHead, depth_layers
from mtv.objectives.base import Needs, Objective, Towers, register


class DepthConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    enabled: bool = True
    weight: float = Field(1.0, ge=0, description="lambda of loss_depth in the total loss")
    head: Literal["dpt", "linear"] = Field("dpt", description="dpt: a light DPT; linear: LayerNorm, concat and a "
                                           "linear map per token (the tower must carry depth per patch)")
    layers: list[int] | None = Field(None, min_length=1, description="0-based tower blocks the head reads (-1: the "
                                     "last); None: DPT's four hooks, ceil((k + 1) n / 4) - 1. The DPT head reads four")
    token_weight: float = Field(0.0, ge=0, description="lambda of loss_depth_tokens relative to loss_depth: the same "
                                "loss on a linear head over the final block's tokens. A DPT can infer depth from the "
                                "context of many tokens; this term asks each final token to carry its own. "
                                "0: no such head")
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

    @model_validator(mode="after")
    def _dpt_reads_four(self) -> "DepthConfig":
        if self.head == "dpt" and self.layers is not None and len(self.layers) != 4:
            raise ValueError(f"depth.layers {self.layers}: the dpt head reads 4 layers; give 4 or use head: linear")
        return self


@register
class Depth(Objective):
    """Depth head + SSI loss. ``layers`` lists the tower layers the head reads; ``final`` is the last block, which
    the token head (``token_weight`` > 0) reads."""

    name, title, order, Config = "depth", "Depth", 4, DepthConfig
    labels, exported = ("depth",), True

    def __init__(self, cfg: DepthConfig, dim: int, num_layers: int):
        super().__init__()
        self.cfg = cfg
        if any(not -num_layers <= k < num_layers for k in cfg.layers or []):
            raise MTVError(f"depth.layers {cfg.layers}: the tower has {num_layers} blocks (0 .. {num_layers - 1})")
        self.layers = depth_layers(num_layers) if cfg.layers is None else [k % num_layers for k in cfg.layers]
        self.head = DepthHead(dim, cfg.width) if cfg.head == "dpt" else LinearDepthHead(dim, len(self.layers))
        self.final = num_layers - 1
        # built only when weighted: an unused head would leave DDP parameters without gradients
        self.token_head = LinearDepthHead(dim, 1) if cfg.token_weight > 0 else None
        reads = set(self.layers) | ({self.final} if self.token_head else set())
        self.needs = Needs(layers=tuple(sorted(reads)))

    @classmethod
    def build(cls, cfg: DepthConfig, model: SiglipModel) -> "Depth":
        vision = model.config.vision_config
        return cls(cfg, vision.hidden_size, vision.num_hidden_layers)

    @staticmethod
    def decoder_options(cfg: DepthConfig, image_size: int, patch_size: int) -> dict:
        return {"depth": True, "depth_resize": cfg.resize}

    def weights(self) -> dict[str, float]:
        c = self.cfg
        return {"loss_depth": c.weight, **({"loss_depth_tokens": c.weight * c.token_weight} if self.token_head else {})}

    def forward(self, towers: Towers, batch, schedule) -> dict[str, torch.Tensor]:
        layers = [towers.layers[i] for i in self.layers]
        image_size = tuple(batch.pixel_values.shape[-2:])
        final = towers.layers[self.final] if self.token_head else None
        return self.loss(layers, towers.vision.grid, image_size, batch.depth, batch.depth_valid, final)

    def loss(self, layers: Sequence[torch.Tensor], grid: tuple[int, int], image_size: tuple[int, int],
             target: torch.Tensor, valid: torch.Tensor, final: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``layers``: the (B, N, D) outputs of `self.layers`; ``target``: (B, 1, H, W) inverse depth at
        ``image_size``, NaN where invalid; ``valid``: (B,) bool, False for images without a depth label;
        ``final``: the last block's (B, N, D) output, which the token head reads.

        Every image goes through the head and the loss averages over the labelled ones: fixed shapes, no
        data-dependent branch. Without any label the term is a zero that still depends on every head parameter,
        so DDP sees them all used."""
        if tuple(target.shape[-2:]) != tuple(image_size):
            raise ValueError(f"depth target {tuple(target.shape[-2:])} must be at the image size {tuple(image_size)}")
        c = self.cfg
        score = partial(depth_loss, target=target, normalisation=c.normalisation, grad_weight=c.grad_weight,
                        scales=c.scales, min_valid_fraction=c.min_valid_fraction, images=valid)
        terms = {"loss_depth": score(self.head(list(layers), grid, image_size))}
        if self.token_head is not None:
            terms["loss_depth_tokens"] = score(self.token_head([final], grid, image_size))
        return terms

    @torch.no_grad()
    def predict(self, layers: Sequence[torch.Tensor], grid: tuple[int, int],
                image_size: tuple[int, int]) -> torch.Tensor:
        """(B, 1, H, W) relative inverse depth: larger is nearer; scale and shift are arbitrary."""
        return self.head(layers, grid, image_size).float()
