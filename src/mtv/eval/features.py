"""Image and text embeddings of any `SiglipModel`, computed exactly as the public Quick Start computes them.

Inputs come from the model's own `SiglipProcessor` with ``padding="max_length"`` (SigLIP's text tower pools the
last position, so any other padding changes the embedding). ``truncation=True`` only matters for texts longer than
the tower's context, where the Quick Start call would fail instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import SiglipModel, SiglipProcessor


@dataclass(frozen=True)
class ImageView:
    """How images enter the encoder when a protocol prescribes it (Probe3D's SPair: padded with white at the bottom
    and right to a square, then resized to 800 px); the defaults keep the processor's own resizing. ``layers``
    False keeps only the final tokens of such a pass (a large side makes the intermediate layers costly)."""

    side: int | None = None
    pad_square: bool = False
    layers: bool = True


def pad_to_square(image: Image.Image) -> Image.Image:
    """White padding at the bottom and right up to the longer side, as Probe3D's SPair loader."""
    arr = np.asarray(image)
    side = max(arr.shape[:2])
    return Image.fromarray(np.pad(arr, ((0, side - arr.shape[0]), (0, side - arr.shape[1]), (0, 0)),
                                  constant_values=255))


def view_pixels(processor: SiglipProcessor, images: Sequence[Image.Image], view: ImageView,
                patch: int) -> torch.Tensor:
    """The processor's pixel values under ``view``; a side that is not a multiple of ``patch`` is padded with
    zeros around the normalised image to the next multiple (Probe3D's ``center_padding``)."""
    if view.pad_square:
        images = [pad_to_square(im) for im in images]
    size = {"size": {"height": view.side, "width": view.side}} if view.side else {}
    px = processor(images=list(images), return_tensors="pt", **size)["pixel_values"]
    dh, dw = -px.shape[-2] % patch, -px.shape[-1] % patch
    return F.pad(px, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2)) if dh or dw else px


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

