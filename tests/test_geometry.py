"""Flip, crop and resize keep image, boxes, depth and text aligned."""

import numpy as np
import pytest
from PIL import Image

from mtv.data.geometry import crop, hflip, normalize_boxes, resize_boxes, resize_depth, swap_left_right

W, H = 40, 30


def scene(box):
    """An image with ``box`` (integer pixel edges) painted white, and a depth map with distinct values
    everywhere and 5.0 inside the box: both show where the box is."""
    x0, y0, x1, y1 = box
    pixels = np.zeros((H, W, 3), np.uint8)
    pixels[y0:y1, x0:x1] = 255
    depth = np.arange(H * W, dtype=np.float32).reshape(H, W) / (H * W)
    depth[y0:y1, x0:x1] = 5.0
    return Image.fromarray(pixels), np.array([box], np.float32), depth


def extent(mask):
    """Pixel-edge box of the True pixels of a 2-D mask."""
    ys, xs = np.nonzero(mask)
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_swap_left_right_keeps_case_and_whole_words():
    text = "Left of the dog, a LEFT door; the leftmost cat looks right. Leftover rights stay."
    want = "Right of the dog, a RIGHT door; the rightmost cat looks left. Leftover rights stay."
    assert swap_left_right(text) == want
    assert swap_left_right("left-hand side, Rightmost") == "right-hand side, Leftmost"


def test_hflip_mirrors_boxes_depth_and_texts_together():
    image, boxes, depth = scene((2, 3, 10, 20))
    out, fboxes, fdepth, texts = hflip(image, boxes, depth, ["a box on the left", "Left box"])
    assert fboxes.tolist() == [[W - 10, 3, W - 2, 20]]  # x0' = W - x1, x1' = W - x0
    assert extent(np.asarray(out)[..., 0] == 255) == fboxes[0].tolist()
    assert extent(fdepth == 5.0) == fboxes[0].tolist()
    assert fdepth[7, 0] == depth[7, W - 1]
    assert texts == ["a box on the right", "Right box"]


def test_hflip_is_its_own_inverse():
    image, boxes, depth = scene((5, 1, 33, 12))
    texts = ["the left one and the Right one"]
    back = hflip(*hflip(image, boxes, depth, texts))
    assert np.array_equal(np.asarray(back[0]), np.asarray(image))
    assert np.array_equal(back[1], boxes) and np.array_equal(back[2], depth) and back[3] == texts


def test_hflip_without_depth_or_boxes():
    image, _, _ = scene((0, 0, 1, 1))
    _, boxes, depth, _ = hflip(image, np.zeros((0, 4)), None, [])
    assert boxes.shape == (0, 4) and depth is None


def test_crop_moves_boxes_and_depth_consistently():
    image, boxes, depth = scene((12, 8, 30, 25))
    window = (10, 5, 35, 28)
    out, cboxes, cdepth, keep = crop(image, boxes, depth, window)
    assert keep.tolist() == [True] and out.size == (25, 23) and cdepth.shape == (23, 25)
    assert cboxes.tolist() == [[2, 3, 20, 20]]
    assert extent(np.asarray(out)[..., 0] == 255) == cboxes[0].tolist()
    assert extent(cdepth == 5.0) == cboxes[0].tolist()
    assert np.array_equal(cdepth, depth[5:28, 10:35])


def test_crop_clips_and_drops_boxes():
    image, _, depth = scene((0, 0, 1, 1))
    boxes = np.array([[0, 0, 20, 20],    # 60 % inside the window: kept, clipped
                      [0, 0, 14, 20],    # 43 % inside: dropped
                      [20, 10, 22, 30],  # inside but 2 px wide: dropped
                      [30, 0, 40, 10]],  # outside: dropped
                     np.float32)
    _, kept, _, keep = crop(image, boxes, depth, (8, 0, 28, 30), min_visible=0.5, min_size=4)
    assert keep.tolist() == [True, False, False, False]
    assert kept.tolist() == [[0, 0, 12, 20]]
    with pytest.raises(ValueError, match="inside"):
        crop(image, boxes, depth, (30, 0, 50, 10))


def test_resize_and_normalise_boxes():
    boxes = resize_boxes([[4, 3, 20, 15]], (40, 30), (20, 60))
    assert boxes.tolist() == [[2, 6, 10, 30]]
    assert normalize_boxes(boxes, (20, 60))[0].tolist() == pytest.approx([0.1, 0.1, 0.5, 0.5])


def test_resize_depth_does_not_bleed_invalid_pixels():
    depth = np.full((30, 40), 2.0, np.float32)
    depth[:, :20] = np.nan
    for mode in ("bilinear", "nearest"):
        out = resize_depth(depth, (16, 12), mode=mode)
        assert out.shape == (12, 16)
        assert np.all(out[np.isfinite(out)] == pytest.approx(2.0))  # no value mixed with a hole
        assert np.isnan(out[:, :7]).all() and np.isfinite(out[:, 9:]).all()


def test_resize_depth_bilinear_interpolates_valid_values():
    ramp = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (8, 1))
    out = resize_depth(ramp, (16, 8))
    assert np.all(np.diff(out[0]) > 0) and abs(out.mean() - ramp.mean()) < 1e-3
