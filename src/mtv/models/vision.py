"""One pass of the SigLIP image tower that every objective shares.

HF's forward cannot insert a mask token before the transformer nor return chosen intermediate layers, so this
runs the same modules in the same order with those two hooks. With neither, it equals `vision_model(px)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class VisionOutput:
    pooled: torch.Tensor  # (B, D) attention-pooled embedding: SigLIP's image embedding before normalisation
    tokens: torch.Tensor  # (B, N, D) patch tokens after the final layer norm (`last_hidden_state`)
    layers: list[torch.Tensor]  # (B, N, D) outputs of the requested encoder layers, in the order asked
    grid: tuple[int, int]  # patch rows, columns


def encode_images(vision: nn.Module, pixel_values: torch.Tensor, mask: torch.Tensor | None = None,
                  mask_token: torch.Tensor | None = None, layers: list[int] | tuple[int, ...] = ()) -> VisionOutput:
    """``vision`` is `SiglipModel.vision_model`. ``mask`` (B, N) bool marks patches replaced by ``mask_token`` (D,)
    before position embeddings are added; ``layers`` are 0-based encoder layer indices to return.

    Images whose size differs from the tower's get interpolated position embeddings (local crops)."""
    emb = vision.embeddings
    _, _, h, w = pixel_values.shape
    patches = emb.patch_embedding(pixel_values.to(emb.patch_embedding.weight.dtype)).flatten(2).transpose(1, 2)
    if mask is not None:
        patches = torch.where(mask.unsqueeze(-1), mask_token.to(patches.dtype), patches)
    size = vision.config.image_size
    if (h, w) == (size, size):
        x = patches + emb.position_embedding(emb.position_ids)
    else:
        x = patches + emb.interpolate_pos_encoding(patches, h, w)
    wanted, kept = set(layers), {}
    for i, layer in enumerate(vision.encoder.layers):
        x = layer(x, None)
        if isinstance(x, tuple):
            x = x[0]
        if i in wanted:
            kept[i] = x
    tokens = vision.post_layernorm(x)
    pooled = vision.head(tokens)
    p = vision.config.patch_size
    return VisionOutput(pooled, tokens, [kept[i] for i in layers], (h // p, w // p))
