"""Image and text preprocessing for training, equal to what the exported `SiglipProcessor` does at inference."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def image_to_tensor(img: Image.Image, size: int) -> torch.Tensor:
    """Resize (bicubic, like SiglipImageProcessor) and scale to [-1, 1]: (3, size, size) float32."""
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BICUBIC)
    arr = np.asarray(img, dtype=np.float32) / 255.0
    return torch.from_numpy((arr - 0.5) / 0.5).permute(2, 0, 1).contiguous()


def tokenize(tokenizer, text: str, length: int) -> torch.Tensor:
    """Token ids padded to ``length`` (SigLIP pools the last position, so training pads like the Quick Start)."""
    ids = tokenizer(text, padding="max_length", truncation=True, max_length=length)["input_ids"]
    return torch.tensor(ids, dtype=torch.long)
