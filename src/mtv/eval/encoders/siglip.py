"""`SiglipModel` directories: Google's SigLIP, fixed-resolution SigLIP 2 (its tokenizer is Gemma's) and MTV's
exports. The image pass is the one training uses (`mtv.models.vision.encode_images`), text is padded to the
tokenizer's length as the Quick Start pads it (the text tower pools the last position)."""

from __future__ import annotations

from typing import Sequence

import torch
from transformers import SiglipConfig

from mtv.eval.encoders import register
from mtv.eval.encoders.base import Encoder
from mtv.models.siglip import build_model
from mtv.models.vision import VisionOutput, encode_images


@register
class SiglipEncoder(Encoder):
    family = "siglip"
    accepts_text = "SiglipModel (model_type 'siglip': SigLIP, fixed-resolution SigLIP 2, MTV exports)"
    model_types = ("siglip",)
    has_text = True
    carries_heads = True

    @classmethod
    def untrained(cls, path: str, recipe: dict):
        """With the logit init of the training run where ``recipe`` has it (`build_model`'s SigLIP defaults else)."""
        logits = {"init_scale": recipe["init_logit_scale"], "init_bias": recipe["init_logit_bias"]} \
            if "init_logit_scale" in recipe else {}
        return build_model(SiglipConfig.from_pretrained(path), seed=recipe["seed"], **logits)

    def encode(self, pixel_values: torch.Tensor, layers: Sequence[int] = ()) -> VisionOutput:
        return encode_images(self.model.vision_model, pixel_values, layers=layers)

    def text_features(self, texts: list[str]) -> torch.Tensor:
        # whatever the tokenizer returns (Google's and ours: input_ids only) goes to the tower, as in model(**inputs)
        inputs = self.tokenizer(texts, padding="max_length", truncation=True, return_tensors="pt")
        return self.model.get_text_features(**{k: v.to(self.device) for k, v in inputs.items()}).pooler_output

    def logit_scale_and_bias(self) -> tuple[float, float]:
        return self.model.logit_scale.exp().item(), self.model.logit_bias.item()
