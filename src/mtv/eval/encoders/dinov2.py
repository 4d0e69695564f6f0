"""`Dinov2Model` and `Dinov2WithRegistersModel` directories: image only. The class token and the register tokens
come before the patch grid and are dropped from it; the image embedding is the normalised class token (HF's
``pooler_output``)."""

from __future__ import annotations

from mtv.eval.encoders import register
from mtv.eval.encoders.base import Encoder


@register
class Dinov2Encoder(Encoder):
    family = "dinov2"
    accepts_text = "Dinov2Model (model_type 'dinov2' or 'dinov2_with_registers')"
    model_types = ("dinov2", "dinov2_with_registers")

    @property
    def prefix_tokens(self) -> int:
        return 1 + getattr(self.model.config, "num_register_tokens", 0)
