"""Image and text embeddings of any encoder (`mtv.eval.encoders`), L2-normalised, in batches.

Images go through the encoder's own preprocessing (its processor config's size, resampling, mean and std) and
its pooled embedding; texts through its own tokenizer and text tower, which for a SigLIP export reproduces the
public Quick Start's logits.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from mtv.eval.encoders import Encoder


@dataclass(frozen=True)
class ImageView:
    """How images enter the encoder when a protocol prescribes it (Probe3D's SPair: padded with white at the bottom
    and right to a square, then resized to 800 px); the defaults keep the encoder's own resizing. ``layers``
    False keeps only the final tokens of such a pass (a large side makes the intermediate layers costly)."""

    side: int | None = None
    pad_square: bool = False
    layers: bool = True


def pad_to_square(image: Image.Image) -> Image.Image:
    """White padding at the bottom and right up to the longer side, as Probe3D's SPair loader."""
    arr = np.asarray(image.convert("RGB"))
    side = max(arr.shape[:2])
    return Image.fromarray(np.pad(arr, ((0, side - arr.shape[0]), (0, side - arr.shape[1]), (0, 0)),
                                  constant_values=255))


def view_pixels(encoder: Encoder, images: Sequence[Image.Image], view: ImageView) -> torch.Tensor:
    """The encoder's pixel values under ``view`` (its own resampling, mean and std); a side that is not a multiple
    of the patch is padded with zeros around the normalised image to the next multiple (Probe3D's
    ``center_padding``)."""
    if view.pad_square:
        images = [pad_to_square(im) for im in images]
    spec = replace(encoder.image, size=(view.side, view.side)) if view.side else encoder.image
    px = spec.pixels(images)
    patch = encoder.patch_size
    dh, dw = -px.shape[-2] % patch, -px.shape[-1] % patch
    if dh or dw:
        px = F.pad(px, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))
    return px.to(encoder.device, encoder.model.dtype)


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
