"""Self-supervised views of one image: the second global crop and the local crops (DINOv2's augmentations).

The first global view is the clean view that every objective shares, made elsewhere (`mtv.data.views`).
All randomness comes from the ``numpy.random.Generator`` passed in, so a sample's views are reproducible.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from mtv.data.geometry import random_window
from mtv.data.transforms import Pixels, image_to_tensor


def local_crop_size(image_size: int, patch_size: int, fraction: float = 0.4) -> int:
    """About ``fraction`` of the training resolution, rounded to whole patches (224/16 -> 96, as DINOv2)."""
    return max(1, round(fraction * image_size / patch_size)) * patch_size


class MultiCrop:
    """``multicrop(img, rng, pixels)`` -> (global view 2 (3, S, S), locals (n_local, 3, s, s)), normalised as the
    model's image processor says (`Pixels`).

    Defaults are DINOv2's: both kinds of crop get flips, colour jitter and grayscale; the second global crop is
    rarely blurred and sometimes solarised, the locals are blurred half the time."""

    def __init__(self, image_size: int, patch_size: int, n_local: int = 6,
                 global_scale: tuple[float, float] = (0.32, 1.0), local_scale: tuple[float, float] = (0.05, 0.32),
                 local_fraction: float = 0.4, ratio: tuple[float, float] = (3 / 4, 4 / 3), flip_p: float = 0.5,
                 jitter_p: float = 0.8, brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.2,
                 hue: float = 0.1, grayscale_p: float = 0.2, global_blur_p: float = 0.1, local_blur_p: float = 0.5,
                 blur_sigma: tuple[float, float] = (0.1, 2.0), solarize_p: float = 0.2, solarize_threshold: int = 128):
        self.size, self.local_size = image_size, local_crop_size(image_size, patch_size, local_fraction)
        self.n_local, self.global_scale, self.local_scale, self.ratio = n_local, global_scale, local_scale, ratio
        self.flip_p, self.jitter_p, self.grayscale_p = flip_p, jitter_p, grayscale_p
        self.brightness, self.contrast, self.saturation, self.hue = brightness, contrast, saturation, hue
        self.global_blur_p, self.local_blur_p, self.blur_sigma = global_blur_p, local_blur_p, blur_sigma
        self.solarize_p, self.solarize_threshold = solarize_p, solarize_threshold

    def __call__(self, img: Image.Image, rng: np.random.Generator,
                 pixels: Pixels = Pixels()) -> tuple[torch.Tensor, torch.Tensor]:
        img = img.convert("RGB")
        view = self._crop(img, self.global_scale, self.size, rng)
        view = self._blur(self._colour(view, rng), self.global_blur_p, rng)
        if rng.random() < self.solarize_p:
            view = ImageOps.solarize(view, self.solarize_threshold)
        locals_ = [self._blur(self._colour(self._crop(img, self.local_scale, self.local_size, rng), rng),
                              self.local_blur_p, rng) for _ in range(self.n_local)]
        s = self.local_size
        return (image_to_tensor(view, self.size, pixels),
                torch.stack([image_to_tensor(v, s, pixels) for v in locals_]) if locals_ else torch.empty(0, 3, s, s))

    def _crop(self, img: Image.Image, scale: tuple[float, float], size: int, rng: np.random.Generator) -> Image.Image:
        """Random resized crop (`random_window`), then a random flip."""
        out = img.resize((size, size), Image.Resampling.BICUBIC, box=random_window(img.size, scale, self.ratio, rng))
        return out.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < self.flip_p else out

    def _colour(self, img: Image.Image, rng: np.random.Generator) -> Image.Image:
        """Colour jitter (brightness, contrast, saturation, hue in random order) then random grayscale."""
        if rng.random() < self.jitter_p:
            factors = [rng.uniform(max(0.0, 1 - s), 1 + s) for s in (self.brightness, self.contrast, self.saturation)]
            shift = rng.uniform(-self.hue, self.hue)
            for op in rng.permutation(4):
                if op == 0:
                    img = ImageEnhance.Brightness(img).enhance(factors[0])
                elif op == 1:
                    img = ImageEnhance.Contrast(img).enhance(factors[1])
                elif op == 2:
                    img = ImageEnhance.Color(img).enhance(factors[2])
                else:
                    img = _shift_hue(img, shift)
        if rng.random() < self.grayscale_p:
            img = img.convert("L").convert("RGB")
        return img

    def _blur(self, img: Image.Image, p: float, rng: np.random.Generator) -> Image.Image:
        if rng.random() < p:
            return img.filter(ImageFilter.GaussianBlur(radius=rng.uniform(*self.blur_sigma)))
        return img


def _shift_hue(img: Image.Image, shift: float) -> Image.Image:
    """Rotate hue by ``shift`` turns (in [-0.5, 0.5]) in HSV space."""
    hsv = np.array(img.convert("HSV"))
    hsv[..., 0] = (hsv[..., 0].astype(np.int16) + round(shift * 256)) % 256
    return Image.fromarray(hsv, "HSV").convert("RGB")
