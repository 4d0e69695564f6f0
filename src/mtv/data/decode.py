"""Decoding of sample fields; anything undecodable raises SkipSample with the reason."""

from __future__ import annotations

import io
import json

import numpy as np
from PIL import Image, UnidentifiedImageError

from mtv.data.shards import image_key
from mtv.errors import SkipSample


def decode_image(sample: dict, ext: str | None = None) -> Image.Image:
    """The sample's image as RGB (greyscale, palette and RGBA are converted)."""
    ext = ext or image_key(sample)
    if ext is None or ext not in sample:
        raise SkipSample("no_image")
    try:
        img = Image.open(io.BytesIO(sample[ext]))
        img.load()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise SkipSample("bad_image") from None
    if img.mode != "RGB":
        img = img.convert("RGBA").convert("RGB") if img.mode in ("P", "LA") else img.convert("RGB")
    return img


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
