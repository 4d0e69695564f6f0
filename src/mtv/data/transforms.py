"""Image and text preprocessing for training, equal to what the exported `SiglipProcessor` does at inference."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image


@dataclass(frozen=True)
class Pixels:
    """How an image becomes the tower's input, as the model's image processor says: resample filter, then
    ``(x / 255 - mean) / std`` per channel. The default is SigLIP's (bicubic, mean = std = 0.5, i.e. [-1, 1])."""

    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    resample: int = Image.Resampling.BICUBIC

    @classmethod
    def of(cls, image_processor) -> "Pixels":
        def triple(v):
            return tuple(float(x) for x in (v if isinstance(v, (list, tuple)) else [v] * 3))

        return cls(triple(image_processor.image_mean), triple(image_processor.image_std),
                   int(getattr(image_processor, "resample", None) or Image.Resampling.BICUBIC))


def image_to_tensor(img: Image.Image, size: int, pixels: Pixels = Pixels()) -> torch.Tensor:
    """Resize to ``size`` and normalise as ``pixels`` says: (3, size, size) float32."""
    if img.size != (size, size):
        img = img.resize((size, size), pixels.resample)
    arr = np.asarray(img, dtype=np.float32) / 255.0
    arr = (arr - np.asarray(pixels.mean, np.float32)) / np.asarray(pixels.std, np.float32)
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def tokenize(tokenizer, text: str, length: int) -> torch.Tensor:
    """Token ids padded to ``length`` (SigLIP pools the last position, so training pads like the Quick Start)."""
    ids = tokenizer(text, padding="max_length", truncation=True, max_length=length)["input_ids"]
    return torch.tensor(ids, dtype=torch.long)
