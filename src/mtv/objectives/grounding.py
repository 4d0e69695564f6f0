"""Objective 3: grounding from OWLv2 pseudo-boxes: region-text alignment and text-to-box regression."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn
from torch.distributed import ProcessGroup
from transformers import SiglipModel

from mtv.errors import MTVError
from mtv.losses.grounding import box_loss, region_text_loss
from mtv.objectives.base import Needs, Objective, Towers, register
from mtv.models.prompter import Prompter, xyxy_to_cxcywh
from mtv.ops.boxes import cxcywh_to_xyxy


class GroundingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    enabled: bool = True
    region_text: bool = Field(True, description="region-text sigmoid alignment (loss_grounding)")
    text_to_box: bool = Field(True, description="entity-to-box regression (loss_box); needed by `mtv predict`")
    weight: float = Field(1.0, ge=0, description="lambda of loss_grounding in the total loss")
    box_weight: float = Field(1.0, ge=0, description="lambda of loss_box in the total loss")
    l1_weight: float = Field(5.0, ge=0, description="L1 weight inside loss_box (DETR)")
    giou_weight: float = Field(2.0, ge=0, description="1 - GIoU weight inside loss_box (DETR)")
    min_score: float = Field(0.3, ge=0, le=1, description="loader keeps pseudo-boxes scoring at least this")
    max_boxes: int = Field(10, ge=1, description="loader keeps at most this many boxes per image (highest scores)")
    min_visible: float = Field(0.5, ge=0, le=1, description="the clean view's crop (data.crop_scale) drops boxes "
                               "with less of their area left")
    min_box_size: float = Field(4.0, ge=0, description="the clean view's crop drops boxes narrower or lower than "
                                "this (stored image pixels)")
    layers: int = Field(1, ge=1, le=2, description="prompter cross-attention layers")
    heads: int | None = Field(None, ge=1, description="prompter attention heads; None: token width // 64")
    box_freqs: int = Field(16, ge=1, description="sinusoidal frequencies per box coordinate")
    init_logit_scale: float = Field(10.0, gt=0, description="t = exp(t') at the start")
    init_logit_bias: float = -10.0
    max_logit_scale: float = Field(100.0, gt=0, description="t is clamped to [1, this] after each step")

    @model_validator(mode="after")
    def _check(self) -> "GroundingConfig":
        if self.enabled and not (self.region_text or self.text_to_box):
            raise ValueError("grounding: enabled needs region_text or text_to_box (or set enabled: false)")
        return self


def text_dim(model: SiglipModel) -> int:
    """Width of the text tower's pooled embedding, which grounding aligns regions with."""
    return model.config.text_config.projection_size or model.config.text_config.hidden_size


@register
class Grounding(Objective):
    """Prompter + its own logit scale t' and bias b; ``dim`` is the patch-token width, ``text_dim`` the text
    embedding width. Returns unweighted terms; `weights` holds their lambdas."""

    name, title, order, Config = "grounding", "Grounding", 3, GroundingConfig
    labels, exported = ("boxes",), True
    needs = Needs(phrases=True)

    def __init__(self, cfg: GroundingConfig, dim: int, text_dim: int):
        super().__init__()
        self.cfg, self.text_dim = cfg, text_dim
        self.prompter = Prompter(dim, text_dim, layers=cfg.layers, heads=cfg.heads, box_freqs=cfg.box_freqs,
                                 regions=cfg.region_text, boxes=cfg.text_to_box)
        if cfg.region_text:  # shape (1,) as SiglipModel's: FSDP2 shards no 0-d parameter
            self.logit_scale = nn.Parameter(torch.tensor([math.log(cfg.init_logit_scale)]))
            self.logit_bias = nn.Parameter(torch.tensor([cfg.init_logit_bias]))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Heads and checkpoints written while the logit scale and bias were 0-d still load."""
        for name in ("logit_scale", "logit_bias"):
            if (value := state_dict.get(prefix + name)) is not None and value.ndim == 0:
                state_dict[prefix + name] = value.reshape(1)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @classmethod
    def build(cls, cfg: GroundingConfig, model: SiglipModel) -> "Grounding":
        return cls(cfg, model.config.vision_config.hidden_size, text_dim(model))

    @staticmethod
    def decoder_options(cfg: GroundingConfig, image_size: int, patch_size: int) -> dict:
        return {"max_boxes": cfg.max_boxes, "min_score": cfg.min_score, "min_visible": cfg.min_visible,
                "min_box_size": cfg.min_box_size}

    def weights(self) -> dict[str, float]:
        c = self.cfg
        return {k: w for k, w, on in (("loss_grounding", c.weight, c.region_text),
                                      ("loss_box", c.box_weight, c.text_to_box)) if on}

    def forward(self, towers: Towers, batch, schedule) -> dict[str, torch.Tensor]:
        """Each box slot's phrase embedding is its row of the towers' phrase embeddings (zeros without any)."""
        valid = batch.box_valid
        if towers.phrases is not None:
            entity = towers.phrases[batch.phrase_index]
        else:
            entity = towers.clean_tokens.new_zeros((*valid.shape, self.text_dim), dtype=torch.float32)
        return self.loss(towers.clean_tokens, towers.vision.grid, batch.boxes, valid, entity, batch.entity_ids,
                         towers.group)

    def after_step(self, model: SiglipModel, schedule) -> None:
        self.clamp_()

    def loss(self, patch_tokens: torch.Tensor, grid: tuple[int, int], boxes: torch.Tensor,
                box_valid: torch.Tensor, entity_emb: torch.Tensor, entity_ids: torch.Tensor,
                group: ProcessGroup | None = None) -> dict[str, torch.Tensor]:
        """``patch_tokens`` (B, N, D) of the clean view; ``boxes`` (B, M, 4) normalised xyxy; ``box_valid`` (B, M);
        ``entity_emb`` (B, M, E) L2-normalised; ``entity_ids`` (B, M) int64 `name_id`s. Padded slots may hold
        anything finite. ``group``: the ranks the region-text term gathers entities from (None: this process).

        Every slot of every image goes through the prompter (its queries never attend to each other, so padding
        changes no box's output) and the losses weigh the valid slots only: fixed shapes, no data-dependent
        branch, so the step compiles into one graph. Without any valid box each term is a zero that still
        depends on every parameter, as DDP (without find_unused_parameters) requires. The region-text term is
        computed on every rank, because its cross-rank gather is a collective that every rank must join."""
        valid = box_valid.bool().flatten()
        out = {}
        if self.cfg.region_text:
            regions = self.prompter.regions(patch_tokens, grid, boxes).flatten(0, 1)
            out["loss_grounding"] = region_text_loss(
                F.normalize(regions.float(), dim=-1), entity_emb.flatten(0, 1), entity_ids.flatten(),
                self.logit_scale.float().exp(), self.logit_bias.float(), group, valid)
        if self.cfg.text_to_box:
            pred = self.prompter.locate(patch_tokens, grid, entity_emb).flatten(0, 1)
            target = xyxy_to_cxcywh(boxes.float()).flatten(0, 1)
            out["loss_box"] = box_loss(pred, target, self.cfg.l1_weight, self.cfg.giou_weight, valid=valid)
        return out

    @torch.no_grad()
    def predict_boxes(self, patch_tokens: torch.Tensor, grid: tuple[int, int],
                      entity_emb: torch.Tensor) -> torch.Tensor:
        """Boxes (Q, 4) as normalised xyxy for Q L2-normalised phrase embeddings (Q, E) in one image whose
        tokens are (N, D) or (1, N, D)."""
        if not self.cfg.text_to_box:
            raise MTVError("grounding.text_to_box was off in training: this model cannot localise phrases")
        tokens = patch_tokens.reshape(1, *patch_tokens.shape[-2:])
        boxes = self.prompter.locate(tokens, grid, entity_emb.reshape(1, -1, entity_emb.shape[-1]))[0]
        return cxcywh_to_xyxy(boxes.float()).clamp(0.0, 1.0)

    @torch.no_grad()
    def score_boxes(self, patch_tokens: torch.Tensor, grid: tuple[int, int], boxes: torch.Tensor,
                    entity_emb: torch.Tensor) -> torch.Tensor | None:
        """(Q,) probabilities, by the region-text head, that each of Q normalised xyxy ``boxes`` shows its phrase
        (the training loss's sigmoid(t cos + b)); None for a model trained without grounding.region_text."""
        if not self.cfg.region_text:
            return None
        tokens = patch_tokens.reshape(1, *patch_tokens.shape[-2:])
        regions = F.normalize(self.prompter.regions(tokens, grid, boxes.reshape(1, -1, 4))[0].float(), dim=-1)
        cos = (regions * F.normalize(entity_emb.float(), dim=-1)).sum(-1)
        return torch.sigmoid(self.logit_scale.float().exp() * cos + self.logit_bias.float())

    @torch.no_grad()
    def clamp_(self) -> None:
        """Keeps t = exp(t') in [1, max] after each step, like objective 1."""
        if self.cfg.region_text:
            self.logit_scale.clamp_(0.0, math.log(self.cfg.max_logit_scale))
