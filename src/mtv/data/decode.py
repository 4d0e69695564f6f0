"""Decoding of sample fields; anything undecodable raises SkipSample with the reason."""

from __future__ import annotations

import io
import json
import os

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mtv.data.shards import image_key
from mtv.errors import SkipSample


BACKGROUND = (255, 255, 255)  # what transparent pixels are composited on, as a viewer shows them


def to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB as a person sees the file: EXIF orientation applied, transparency (RGBA, LA, palette with a
    transparent index) composited on white instead of exposing the hidden colour, 16- and 32-bit greyscale
    scaled to 8 bits instead of clipped, CMYK and the rest converted."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(img, dtype=np.float64)
        scale = 257.0 if a.max() <= 65535 else a.max() / 255.0  # 16-bit range, or a 32-bit image's own peak
        img = Image.fromarray(np.clip(a / scale, 0, 255).round().astype(np.uint8), "L")
    elif img.mode == "F":
        img = Image.fromarray(np.clip(np.asarray(img), 0, 255).astype(np.uint8), "L")
    if (img.mode == "P" and "transparency" in img.info) or img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


def open_image(src: str | os.PathLike | bytes) -> Image.Image:
    """The one image decoder of training, labelling, evaluation and prediction: a path or encoded bytes to
    `to_rgb`'s RGB; an unreadable file raises SkipSample("bad_image")."""
    try:
        img = Image.open(io.BytesIO(src) if isinstance(src, bytes) else src)
        img.load()
        return to_rgb(img)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise SkipSample("bad_image") from None


def decode_image(sample: dict, ext: str | None = None) -> Image.Image:
    """The sample's image, decoded by `open_image`."""
    ext = ext or image_key(sample)
    if ext is None or ext not in sample:
        raise SkipSample("no_image")
    return open_image(sample[ext])


def decode_caption(sample: dict) -> str:
    raw = sample.get("txt")
    if raw is None:
        raise SkipSample("no_caption")
    text = raw.decode("utf-8", errors="replace").strip()
    if not text:
        raise SkipSample("empty_caption")
    return text


def decode_json(sample: dict) -> dict:
    raw = sample.get("json")
    if raw is None:
        return {}
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise SkipSample("bad_json") from None


def decode_depth(sample: dict, meta: dict, ext: str = "depth.png") -> np.ndarray:
    """Float depth map from a 16-bit PNG: ``value * scale + shift``; stored zeros become NaN (invalid).

    ``meta`` is the sample JSON's ``depth`` entry (or ``view2_depth``) with ``scale`` and ``shift``.
    """
    if ext not in sample:
        raise SkipSample("no_depth")
    try:
        raw = np.asarray(Image.open(io.BytesIO(sample[ext])), dtype=np.float32)
    except (UnidentifiedImageError, OSError, ValueError):
        raise SkipSample("bad_depth") from None
    depth = raw * float(meta.get("scale", 1.0)) + float(meta.get("shift", 0.0))
    depth[raw == 0] = np.nan
    return depth
