"""Geometric transforms that move an image, its boxes and its depth map together.

Conventions: boxes are float32 ``(M, 4)`` arrays of ``x0, y0, x1, y1`` in pixel-edge coordinates (a box covering
the whole ``W x H`` image is ``0, 0, W, H``); depth is an ``(H, W)`` float32 array at the image's resolution with
NaN for invalid pixels, or None; sizes are ``(width, height)`` as PIL writes them. Every function is pure: it
returns new arrays and never changes its inputs.
"""

from __future__ import annotations

import math
import re
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

_SIDE = re.compile(r"\b(left|right)(most)?\b", re.IGNORECASE)
_OTHER = {"left": "right", "right": "left"}


def _as_boxes(boxes) -> np.ndarray:
    return np.asarray(boxes, dtype=np.float32).reshape(-1, 4)


def _check_depth(image: Image.Image, depth: np.ndarray | None) -> None:
    if depth is not None and depth.shape != (image.height, image.width):
        raise ValueError(f"depth map {depth.shape} must match the image (H, W) = {(image.height, image.width)}; "
                         "resize it with resize_depth first")


def _swap_word(m: re.Match) -> str:
    word = m.group(0)
    swapped = _OTHER[m.group(1).lower()] + (m.group(2) or "").lower()
    if word.isupper():
        return swapped.upper()
    return swapped.capitalize() if word[0].isupper() else swapped


def swap_left_right(text: str) -> str:
    """Swaps whole words left/right (and leftmost/rightmost), keeping their case.

    "left" the verb ("she left") is swapped too: a caption model cannot tell, and such captions are rare."""
    return _SIDE.sub(_swap_word, text)


def hflip(image: Image.Image, boxes, depth: np.ndarray | None, texts: Sequence[str]
          ) -> tuple[Image.Image, np.ndarray, np.ndarray | None, list[str]]:
    """Mirrors the image, its boxes and depth, and swaps left/right in ``texts`` (caption and phrases), so the
    captions stay true of the flipped image. Applying it twice gives the input back."""
    _check_depth(image, depth)
    b = _as_boxes(boxes)
    flipped = np.stack([image.width - b[:, 2], b[:, 1], image.width - b[:, 0], b[:, 3]], axis=1)
    out_depth = None if depth is None else np.ascontiguousarray(depth[:, ::-1])
    return (image.transpose(Image.Transpose.FLIP_LEFT_RIGHT), flipped, out_depth,
            [swap_left_right(t) for t in texts])


def random_window(size: tuple[int, int], scale: tuple[float, float], ratio: tuple[float, float],
                  rng: np.random.Generator) -> tuple[int, int, int, int]:
    """A random-resized-crop window ``(left, top, right, bottom)`` of an image of ``size``: area fraction uniform
    in ``scale``, aspect log-uniform in ``ratio``. Ten draws; the whole image if none fits (extreme aspects)."""
    w, h = size
    for _ in range(10):
        area = w * h * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        cw, ch = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            return left, top, left + cw, top + ch
    return 0, 0, w, h


def crop(image: Image.Image, boxes, depth: np.ndarray | None, window: tuple[int, int, int, int],
         min_visible: float = 0.5, min_size: float = 4.0
         ) -> tuple[Image.Image, np.ndarray, np.ndarray | None, np.ndarray]:
    """Crops to ``window = (left, top, right, bottom)`` (integer pixels inside the image).

    Boxes move into the window's frame and are clipped to it. A box is dropped when less than ``min_visible`` of
    its area survives (a phrase about a mostly cut-off object would mislabel what is left) or when its clipped
    width or height is under ``min_size`` pixels. Returns the kept boxes and the boolean ``keep`` mask over the
    input boxes, so the caller can drop the matching phrases."""
    _check_depth(image, depth)
    left, top, right, bottom = (int(v) for v in window)
    if not (0 <= left < right <= image.width and 0 <= top < bottom <= image.height):
        raise ValueError(f"crop window {window} must lie inside the {image.width}x{image.height} image")
    b = _as_boxes(boxes)
    moved = b - np.array([left, top, left, top], dtype=np.float32)
    clipped = np.clip(moved, 0, [right - left, bottom - top, right - left, bottom - top]).astype(np.float32)
    w, h = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
    area = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    keep = (w * h >= min_visible * area) & (w >= min_size) & (h >= min_size)
    out_depth = None if depth is None else depth[top:bottom, left:right].copy()
    return image.crop((left, top, right, bottom)), clipped[keep], out_depth, keep


def resize_boxes(boxes, from_size: tuple[int, int], to_size: tuple[int, int]) -> np.ndarray:
    """Boxes of an image of ``from_size`` in the frame of the same image resized to ``to_size``."""
    sx, sy = to_size[0] / from_size[0], to_size[1] / from_size[1]
    return _as_boxes(boxes) * np.array([sx, sy, sx, sy], dtype=np.float32)


def normalize_boxes(boxes, size: tuple[int, int]) -> np.ndarray:
    """Pixel boxes as fractions of the image in [0, 1], the form the grounding objective takes."""
    w, h = size
    return np.clip(_as_boxes(boxes) / np.array([w, h, w, h], dtype=np.float32), 0.0, 1.0)


def resize_depth(depth: np.ndarray, size: tuple[int, int], mode: str = "bilinear",
                 min_support: float = 0.5) -> np.ndarray:
    """Resizes an (H, W) depth map with NaN holes to ``size = (width, height)``.

    ``nearest`` copies values, so holes keep their place exactly. ``bilinear`` is a normalised convolution: it
    interpolates the valid values and the validity mask with the same (antialiased) weights and divides, so an
    invalid pixel never bleeds into its neighbours; an output pixel whose weight on valid input is below
    ``min_support`` becomes NaN."""
    w, h = size
    x = torch.from_numpy(np.ascontiguousarray(depth, dtype=np.float32))[None, None]
    if mode == "nearest":
        return F.interpolate(x, size=(h, w), mode="nearest-exact")[0, 0].numpy()
    if mode != "bilinear":
        raise ValueError(f"resize_depth: mode must be 'nearest' or 'bilinear', got {mode!r}")
    valid = torch.isfinite(x).float()
    both = torch.cat([torch.where(valid > 0, x, 0.0), valid], dim=1)
    num, den = F.interpolate(both, size=(h, w), mode="bilinear", align_corners=False, antialias=True)[0]
    return torch.where(den >= min_support, num / den.clamp_min(1e-6), float("nan")).numpy()
