"""DINOv3's ViT (`DINOv3ViTModel`, model_type ``dinov3_vit``): image only, rotary positions, so any size on its
patch grid. Its class token and register tokens precede the patches and are dropped; the image embedding is the
normalised class token (``pooler_output``)."""

from __future__ import annotations

from mtv.eval.encoders import register
from mtv.eval.encoders.base import Encoder


@register
class Dinov3Encoder(Encoder):
    family = "dinov3"
    accepts_text = "DINOv3ViTModel (model_type 'dinov3_vit')"
    model_types = ("dinov3_vit",)

    @property
    def prefix_tokens(self) -> int:
        return 1 + self.model.config.num_register_tokens
