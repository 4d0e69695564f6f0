"""The one image decoder (`mtv.data.decode.open_image`): what a person sees in the file, as 8-bit RGB."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from mtv.data.decode import open_image

from mtv.data.schema import decode_image
from mtv.errors import SkipSample


def _encoded(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def test_exif_orientation_is_applied():
    a = np.zeros((2, 3, 3), np.uint8)
    a[0, 0] = (255, 0, 0)  # red top-left of a 3-wide, 2-high picture
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    img = np.asarray(open_image(_encoded(Image.fromarray(a), exif=exif)))
    assert img.shape == (3, 2, 3)  # displayed upright: 2 wide, 3 high
    assert img[0, 1].tolist() == [255, 0, 0] and img[..., 0].sum() == 255  # the red corner is now top-right


def test_transparent_pixels_are_composited_on_white_not_their_hidden_colour():
    rgba = np.zeros((1, 2, 4), np.uint8)
    rgba[0, 0] = (255, 0, 0, 0)  # fully transparent, hidden red
    rgba[0, 1] = (0, 0, 255, 255)  # opaque blue
    got = np.asarray(open_image(_encoded(Image.fromarray(rgba, "RGBA"))))
    assert got[0, 0].tolist() == [255, 255, 255] and got[0, 1].tolist() == [0, 0, 255]
    pal = Image.fromarray(np.array([[0, 1]], np.uint8), "P")
    pal.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    pal.info["transparency"] = 0
    got = np.asarray(decode_image({"png": _encoded(pal)}))
    assert got[0, 0].tolist() == [255, 255, 255] and got[0, 1].tolist() == [0, 255, 0]


def test_sixteen_bit_greyscale_is_scaled_not_clipped():
    a = np.array([[0, 32896, 65535]], np.uint16)
    img = Image.fromarray(a)
    assert img.mode == "I;16"
    got = np.asarray(open_image(_encoded(img)))
    assert got.shape == (1, 3, 3) and got[0, :, 0].tolist() == [0, 128, 255]


def test_cmyk_and_greyscale_become_rgb_and_junk_is_a_skip():
    assert open_image(_encoded(Image.new("CMYK", (2, 2), (0, 0, 0, 0)), "JPEG")).mode == "RGB"
    assert np.asarray(open_image(_encoded(Image.new("L", (2, 2), 7)))).tolist() == [[[7] * 3] * 2] * 2
    with pytest.raises(SkipSample, match="bad_image"):
        open_image(b"not an image")
