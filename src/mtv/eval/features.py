"""Image and text embeddings of any encoder (`mtv.eval.encoders`), L2-normalised, in batches.

Images go through the encoder's own preprocessing (its processor config's size, resampling, mean and std) and
its pooled embedding; texts through its own tokenizer and text tower, which for a SigLIP export reproduces the
public Quick Start's logits.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from mtv.eval.encoders import Encoder


@torch.no_grad()
def embed_images(encoder: Encoder, images: Sequence[Image.Image], batch_size: int = 64) -> torch.Tensor:
    """(N, E) float32 on the CPU; ``images`` must not be empty."""
    out = [F.normalize(encoder.encode(encoder.pixels(images[i:i + batch_size])).pooled.float(), dim=-1).cpu()
           for i in range(0, len(images), batch_size)]
    return torch.cat(out)


@torch.no_grad()
def embed_texts(encoder: Encoder, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
    """(N, E) float32 on the CPU; ``texts`` must not be empty. An encoder without text is an error."""
    out = [F.normalize(encoder.text_features(list(texts[i:i + batch_size])).float(), dim=-1).cpu()
           for i in range(0, len(texts), batch_size)]
    return torch.cat(out)
