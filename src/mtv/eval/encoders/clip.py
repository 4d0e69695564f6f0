"""`CLIPModel` directories (OpenAI's CLIP and its HF ports): its own tokenizer and image processor settings, image
and text embeddings through its projections, its logit scale and no logit bias. Patch tokens are the vision
tower's outputs after the class token, before the final LayerNorm (which CLIP applies to the class token only),
as Probe3D reads them."""

from __future__ import annotations

import torch

from mtv.eval.encoders import register
from mtv.eval.encoders.base import Encoder


@register
class ClipEncoder(Encoder):
    family = "clip"
    accepts_text = "CLIPModel (model_type 'clip')"
    model_types = ("clip",)
    has_text = True
    prefix_tokens = 1  # the class token

    def forward(self, pixel_values: torch.Tensor):
        size = self.vision_config.image_size
        return self.model.vision_model(pixel_values=pixel_values, output_hidden_states=True,
                                       interpolate_pos_encoding=tuple(pixel_values.shape[-2:]) != (size, size))

    def pool(self, out, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.visual_projection(out.pooler_output)

    def text_features(self, texts: list[str]) -> torch.Tensor:
        length = self.model.config.text_config.max_position_embeddings
        inputs = self.tokenizer(texts, padding="max_length", max_length=length, truncation=True, return_tensors="pt")
        return self.model.get_text_features(**{k: v.to(self.device) for k, v in inputs.items()}).pooler_output

    def logit_scale_and_bias(self) -> tuple[float, None]:
        return self.model.logit_scale.exp().item(), None
