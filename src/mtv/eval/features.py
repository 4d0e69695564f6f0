"""Image and text embeddings of any `SiglipModel`, computed exactly as the public Quick Start computes them.

Inputs come from the model's own `SiglipProcessor` with ``padding="max_length"`` (SigLIP's text tower pools the
last position, so any other padding changes the embedding). ``truncation=True`` only matters for texts longer than
the tower's context, where the Quick Start call would fail instead.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from PIL import Image
from transformers import SiglipModel, SiglipProcessor


def _device(model: SiglipModel) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def embed_images(model: SiglipModel, processor: SiglipProcessor, images: Sequence[Image.Image],
                 batch_size: int = 64) -> torch.Tensor:
    """L2-normalised image embeddings, (N, D) float32 on the CPU."""
    out = []
    for i in range(0, len(images), batch_size):
        pixels = processor(images=list(images[i:i + batch_size]), return_tensors="pt")["pixel_values"]
        pooled = model.get_image_features(pixel_values=pixels.to(_device(model), model.dtype)).pooler_output
        out.append(F.normalize(pooled.float(), dim=-1).cpu())
    return torch.cat(out) if out else torch.empty(0, model.config.vision_config.hidden_size)


@torch.no_grad()
def embed_texts(model: SiglipModel, processor: SiglipProcessor, texts: Sequence[str],
                batch_size: int = 64) -> torch.Tensor:
    """L2-normalised text embeddings, (N, D) float32 on the CPU."""
    out = []
    for i in range(0, len(texts), batch_size):
        # Whatever the tokenizer returns (Google's and ours: input_ids only) goes to the tower, as in model(**inputs).
        inputs = processor(text=list(texts[i:i + batch_size]), padding="max_length", truncation=True,
                           return_tensors="pt")
        pooled = model.get_text_features(**{k: v.to(_device(model)) for k, v in inputs.items()}).pooler_output
        out.append(F.normalize(pooled.float(), dim=-1).cpu())
    return torch.cat(out) if out else torch.empty(0, model.config.text_config.hidden_size)

