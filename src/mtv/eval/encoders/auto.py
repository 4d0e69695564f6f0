"""Any other image backbone `transformers.AutoModel` loads whose config names a ``patch_size`` and
``num_hidden_layers`` (ViT, DeiT, BEiT, SigLIP's or CLIP's vision tower alone, ...): image only. Its last
rows × cols output tokens are taken as the patch grid, whatever precedes them; the image embedding is its
``pooler_output`` or, without one, the mean patch token."""

from __future__ import annotations

import torch
from transformers import CONFIG_MAPPING

from mtv.eval.encoders import register
from mtv.eval.encoders.base import Encoder


@register
class AutoEncoder(Encoder):
    family = "auto"
    accepts_text = "any other AutoModel vision backbone whose config has patch_size and num_hidden_layers"
    fallback = True

    @classmethod
    def recognises(cls, config: dict) -> bool:
        return config.get("model_type") in CONFIG_MAPPING and all(
            isinstance(config.get(k), int) for k in ("patch_size", "num_hidden_layers"))

    def pool(self, out, tokens: torch.Tensor) -> torch.Tensor:
        pooled = getattr(out, "pooler_output", None)
        return pooled if isinstance(pooled, torch.Tensor) and pooled.dim() == 2 else tokens.mean(1)
