"""What every objective reads from one sample: the clean view, its caption and labels, and the SSL crops.

The clean view is the image at training resolution, flipped and (with ``data.crop_scale``) cropped only together
with its boxes, depth and the words "left"/"right" (docs/METHOD.md, "One step"). A label an enabled objective needs but the sample lacks is
counted (`Example.missing`) and marked invalid, so that sample contributes nothing to that objective only.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from mtv.data.geometry import crop, hflip, normalize_boxes, random_window, resize_depth
from mtv.data.multicrop import MultiCrop
from mtv.data.schema import decode_caption, decode_image, decode_json, sample_boxes, sample_inverse_depth
from mtv.data.stream import Example
from mtv.data.transforms import Pixels, image_to_tensor, tokenize
from mtv.errors import SkipSample
from mtv.losses.grounding import name_id

CROP_RATIO = (3 / 4, 4 / 3)  # aspect range of the clean view's crop, as the SSL crops'


class ViewDecoder:
    """Raw sample → the tensors of one training example, in DataLoader workers (picklable).

    ``multicrop`` is None when SSL is off; ``max_boxes`` 0 when grounding is off; ``depth`` False when depth is.
    ``fields`` are plug-in objectives' readers, ``(raw, image, rng) -> {name: tensor}``, called with the clean view
    (after its flip and crop); a reader may raise `SkipSample`. ``crop_scale`` (1, 1) draws no crop, so it changes
    no other random draw; otherwise the crop window is cut after the SSL views, which see the whole image."""

    def __init__(self, tokenizer, image_size: int, text_length: int, flip: float = 0.5,
                 multicrop: MultiCrop | None = None, max_boxes: int = 0, min_score: float = 0.0,
                 depth: bool = False, depth_resize: str = "bilinear", pixels: Pixels = Pixels(),
                 fields: Sequence[Callable] = (), crop_scale: tuple[float, float] = (1.0, 1.0),
                 min_visible: float = 0.5, min_box_size: float = 4.0):
        self.tokenizer, self.size, self.text_length, self.flip = tokenizer, image_size, text_length, flip
        self.crop_scale, self.min_visible, self.min_box_size = tuple(crop_scale), min_visible, min_box_size
        self.pixels = pixels
        self.multicrop, self.max_boxes, self.min_score = multicrop, max_boxes, min_score
        self.depth, self.depth_resize = depth, depth_resize
        self.fields = list(fields)

    def __call__(self, raw: dict, rng: np.random.Generator) -> Example:
        caption = decode_caption(raw)
        image = decode_image(raw)
        meta = decode_json(raw) if (self.max_boxes or self.depth) else {}
        boxes, phrases = sample_boxes(meta, self.min_score, self.max_boxes) if self.max_boxes else (None, [])
        depth = sample_inverse_depth(raw, meta) if self.depth else None
        if depth is not None and depth.shape != (image.height, image.width):
            raise SkipSample("depth_size_mismatch")
        if rng.random() < self.flip:
            image, boxes, depth, texts = hflip(image, boxes if boxes is not None else np.zeros((0, 4)), depth,
                                               [caption, *phrases])
            caption, phrases = texts[0], texts[1:]
        out = {"input_ids": tokenize(self.tokenizer, caption, self.text_length)}
        if self.multicrop is not None:
            out["global2"], out["locals"] = self.multicrop(image, rng, self.pixels)
        if self.crop_scale != (1.0, 1.0):
            window = random_window(image.size, self.crop_scale, CROP_RATIO, rng)
            image, boxes, depth, keep = crop(image, boxes if boxes is not None else np.zeros((0, 4)), depth, window,
                                             self.min_visible, self.min_box_size)
            phrases = [p for p, kept in zip(phrases, keep) if kept]
        out["pixel_values"] = image_to_tensor(image, self.size, self.pixels)
        missing = []
        if self.max_boxes:
            out.update(self._boxes(boxes, phrases, image.size))
            if not phrases:
                missing.append("boxes")
        if self.depth:
            valid = depth is not None and np.isfinite(depth).any()
            target = resize_depth(depth, (self.size, self.size), self.depth_resize) if valid else None
            out["depth"] = torch.from_numpy(target)[None] if valid else torch.full((1, self.size, self.size), np.nan)
            out["depth_valid"] = torch.tensor(valid)
            if not valid:
                missing.append("depth")
        for read in self.fields:
            out.update(read(raw, image, rng))
        return Example(out, tuple(missing))

    def _boxes(self, boxes: np.ndarray, phrases: list[str], size: tuple[int, int]) -> dict:
        m = self.max_boxes
        norm = normalize_boxes(boxes, size)
        padded = np.zeros((m, 4), np.float32)
        padded[: len(norm)] = norm
        ids = torch.zeros(m, dtype=torch.long)
        ids[: len(phrases)] = torch.tensor([name_id(p) for p in phrases], dtype=torch.long)
        valid = torch.arange(m) < len(phrases)
        return {"boxes": torch.from_numpy(padded), "box_valid": valid, "entity_ids": ids,
                "phrases": phrases + [""] * (m - len(phrases))}
