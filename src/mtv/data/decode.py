"""The one image decoder (training, labelling, evaluation, prediction); sample members are read by
`mtv.data.schema`."""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

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
