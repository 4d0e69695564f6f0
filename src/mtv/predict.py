"""`mtv predict`: an exported model's depth map and phrase boxes for any photo."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from mtv.data.decode import open_image
from mtv.data.schema import encode_png
from mtv.errors import MTVError, SkipSample
from mtv.eval.features import embed_texts
from mtv.heads import load_heads, require
from mtv.models.siglip import load_siglip
from mtv.models.tokenizer import load_processor
from mtv.models.vision import encode_images


def _open(path: str | os.PathLike) -> Image.Image:
    try:
        return open_image(path)
    except SkipSample:
        raise MTVError(f"{path}: not a readable image; pass a JPEG/PNG photo with --image") from None


@torch.no_grad()
def predict(model_dir: str | os.PathLike, image: str | os.PathLike, phrases: list[str], out: str | os.PathLike) -> dict:
    """Writes ``depth.png`` (16-bit relative inverse depth, scale in ``prediction.json``), ``depth_color.png``,
    and for ``phrases`` ``boxes.png`` with the boxes drawn; returns what ``prediction.json`` holds."""
    model, processor = load_siglip(model_dir).eval(), load_processor(model_dir)
    heads = load_heads(model_dir, model)
    depth_head = require(heads, "depth", model_dir)
    grounding = require(heads, "grounding", model_dir) if phrases else None
    img = _open(image)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pixels = processor(images=img, return_tensors="pt")["pixel_values"]
    tower = encode_images(model.vision_model, pixels, layers=depth_head.layers)

    inv = depth_head.predict(tower.layers, tower.grid, tuple(pixels.shape[-2:]))
    inv = F.interpolate(inv, size=(img.height, img.width), mode="bilinear", align_corners=False)[0, 0].numpy()
    low, high = float(inv.min()), float(inv.max())
    scale = max(high - low, 1e-12) / 65534
    (out / "depth.png").write_bytes(encode_png((np.round((inv - low) / scale) + 1).astype(np.uint16)))
    _colour_depth(inv, out / "depth_color.png")
    result = {"image": str(image), "size": [img.width, img.height],
              "depth": {"type": "inverse_relative", "scale": scale, "shift": low - scale, "file": "depth.png"}}

    if phrases:
        text = embed_texts(model, processor, phrases)
        boxes = grounding.predict_boxes(tower.tokens[0], tower.grid, text)
        boxes = (boxes * torch.tensor([img.width, img.height] * 2)).tolist()
        result["boxes"] = [{"phrase": p, "box": [round(v, 1) for v in b]} for p, b in zip(phrases, boxes)]
        _draw_boxes(img, result["boxes"], out / "boxes.png")
    (out / "prediction.json").write_text(json.dumps(result, indent=2))
    return result


def _colour_depth(inv: np.ndarray, path: Path) -> None:
    import matplotlib

    norm = (inv - inv.min()) / max(float(np.ptp(inv)), 1e-12)
    rgb = (matplotlib.colormaps["magma"](norm)[..., :3] * 255).astype(np.uint8)
    Image.fromarray(rgb).save(path)


def _draw_boxes(img: Image.Image, boxes: list[dict], path: Path) -> None:
    canvas = img.copy()
    draw = ImageDraw.Draw(canvas)
    colours = ["#ff3b30", "#34c759", "#007aff", "#ffcc00", "#af52de", "#5ac8fa"]
    for i, b in enumerate(boxes):
        c = colours[i % len(colours)]
        draw.rectangle(b["box"], outline=c, width=max(1, img.width // 150))
        draw.text((b["box"][0] + 2, b["box"][1] + 1), b["phrase"], fill=c)
    canvas.save(path)
