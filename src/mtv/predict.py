"""`mtv predict`: an exported model's depth map and phrase boxes for any photo, from whichever heads it has."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from mtv.atomic import write_bytes, write_text
from mtv.data.decode import open_image
from mtv.data.schema import encode_png
from mtv.errors import MTVError, SkipSample, writable_dir
from mtv.eval.encoders import ImageSpec
from mtv.eval.encoders.siglip import SiglipEncoder
from mtv.eval.features import embed_texts
from mtv.heads import load_heads
from mtv.models.siglip import load_siglip
from mtv.models.tokenizer import load_processor
from mtv.models.vision import encode_images

COLOURS = ["#ff3b30", "#34c759", "#007aff", "#ffcc00", "#af52de", "#5ac8fa"]
MIN_SIDE = 384  # pictures are drawn at least this large, so boxes and text stay legible for a 64 px image


def _open(path: str | os.PathLike) -> Image.Image:
    try:
        return open_image(path)
    except SkipSample:
        raise MTVError(f"{path}: not a readable image; pass a JPEG/PNG photo with --image") from None


@torch.no_grad()
def predict(model_dir: str | os.PathLike, image: str | os.PathLike, phrases: list[str], out: str | os.PathLike) -> dict:
    """What the export's heads can give: with a depth head ``depth.png`` (16-bit relative inverse depth, scale in
    ``prediction.json``) and ``depth_color.png``; with a grounding head and ``phrases``, ``boxes.png`` and the
    boxes with scores. ``prediction.json`` lists what was not predicted and why; an export with neither head
    is a one-line error. Returns what ``prediction.json`` holds."""
    model, processor = load_siglip(model_dir).eval(), load_processor(model_dir)
    encoder = SiglipEncoder(model, ImageSpec.from_pretrained(model_dir), str(model_dir), processor.tokenizer)
    heads = load_heads(model_dir, model)
    depth_head, grounding = heads.get("depth"), heads.get("grounding") if phrases else None
    if depth_head is None and grounding is None:
        wanted = "a depth or grounding head" + ("" if phrases else " (or --phrases, for its grounding head)")
        raise MTVError(f"{model_dir}: mtv predict needs {wanted}; this export has "
                       f"{' and '.join(heads) + ' only' if heads else 'none'} (a plain SigLIP, or trained with "
                       "depth.enabled and grounding.enabled false)")
    img = _open(image)
    out = writable_dir(out, "predictions", "--out")
    pixels = processor(images=img, return_tensors="pt")["pixel_values"]
    tower = encode_images(model.vision_model, pixels, layers=depth_head.layers if depth_head else ())
    result = {"image": str(image), "size": [img.width, img.height], "not_predicted": {}}
    if depth_head is not None:
        result["depth"] = _depth(depth_head, tower, pixels, img, out)
    else:
        result["not_predicted"]["depth"] = "the export has no depth head"
    if grounding is not None:
        result["boxes"] = _boxes(encoder, grounding, tower, img, phrases)
        write_bytes(out / "boxes.png", _png(draw_boxes(img, result["boxes"])))
    elif phrases:
        result["not_predicted"]["boxes"] = "the export has no grounding head"
    write_text(out / "prediction.json", json.dumps(result, indent=2))
    return result


def _depth(head, tower, pixels, img: Image.Image, out: Path) -> dict:
    inv = head.predict(tower.layers, tower.grid, tuple(pixels.shape[-2:]))
    inv = F.interpolate(inv, size=(img.height, img.width), mode="bilinear", align_corners=False)[0, 0].numpy()
    low, high = float(inv.min()), float(inv.max())
    scale = max(high - low, 1e-12) / 65534
    write_bytes(out / "depth.png", encode_png((np.round((inv - low) / scale) + 1).astype(np.uint16)))
    write_bytes(out / "depth_color.png", _png(colour_depth(inv)))
    return {"type": "inverse_relative", "scale": scale, "shift": low - scale, "file": "depth.png"}


def _boxes(encoder: SiglipEncoder, grounding, tower, img: Image.Image, phrases: list[str]) -> list[dict]:
    text = embed_texts(encoder, phrases)
    boxes = grounding.predict_boxes(tower.tokens[0], tower.grid, text)
    scores = grounding.score_boxes(tower.tokens[0], tower.grid, boxes, text)
    pixels = (boxes * torch.tensor([img.width, img.height] * 2)).tolist()
    return [{"phrase": p, "box": [round(v, 1) for v in b], "score": None if scores is None else float(f"{s:.4g}")}
            for p, b, s in zip(phrases, pixels, scores if scores is not None else [None] * len(phrases))]


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _enlarged(img: Image.Image) -> tuple[Image.Image, float]:
    """The picture at least MIN_SIDE on its short side (pixels kept sharp), and the factor used."""
    factor = max(1.0, MIN_SIDE / min(img.size))
    if factor == 1.0:
        return img.copy(), 1.0
    return img.resize((round(img.width * factor), round(img.height * factor)), Image.NEAREST), factor


def _font(size: int):
    return ImageFont.load_default(size=size)


def draw_boxes(img: Image.Image, boxes: list[dict]) -> Image.Image:
    """Boxes on the (enlarged) picture, and their labels in a key below it, never over the picture: nothing is
    hidden under a label, and boxes that coincide each keep their own line (their outlines are nested)."""
    canvas, factor = _enlarged(img)
    size = max(12, canvas.width // 40)
    width, line = max(2, canvas.width // 200), size + 6
    key = Image.new("RGB", (canvas.width, line * len(boxes) + 6), "white")
    draw, keys = ImageDraw.Draw(canvas), ImageDraw.Draw(key)
    seen: dict[tuple, int] = {}
    for i, b in enumerate(boxes):
        colour = COLOURS[i % len(COLOURS)]
        corners = tuple(round(v, 1) for v in b["box"])
        inset = width * seen.get(corners, 0)  # the n-th identical box is drawn n outline widths inside
        seen[corners] = seen.get(corners, 0) + 1
        x0, y0, x1, y1 = (v * factor for v in b["box"])
        draw.rectangle([x0 + inset, y0 + inset, max(x0 + inset, x1 - inset), max(y0 + inset, y1 - inset)],
                       outline=colour, width=width)
        y = 3 + i * line
        keys.rectangle([6, y + 2, 6 + size, y + size], fill=colour)
        score = "" if b.get("score") is None else f"  {b['score']:.2f}"
        keys.text((12 + size, y), f"{b['phrase']}{score}", fill="black", font=_font(size))
    sheet = Image.new("RGB", (canvas.width, canvas.height + key.height), "white")
    sheet.paste(canvas, (0, 0))
    sheet.paste(key, (0, canvas.height))
    return sheet


def colour_depth(inv: np.ndarray) -> Image.Image:
    """Relative inverse depth in magma, enlarged like the boxes, with a colour bar from near (top) to far."""
    import matplotlib

    cmap = matplotlib.colormaps["magma"]
    norm = (inv - inv.min()) / max(float(np.ptp(inv)), 1e-12)
    picture, _ = _enlarged(Image.fromarray((cmap(norm)[..., :3] * 255).astype(np.uint8)))
    size = max(12, picture.width // 40)
    bar_w, label_w, pad = max(12, picture.width // 25), size * 3, size // 2
    ramp = np.linspace(1, 0, picture.height)[:, None].repeat(bar_w, 1)
    bar = Image.fromarray((cmap(ramp)[..., :3] * 255).astype(np.uint8))
    sheet = Image.new("RGB", (picture.width + pad + bar_w + label_w, picture.height), "white")
    sheet.paste(picture, (0, 0))
    sheet.paste(bar, (picture.width + pad, 0))
    draw, x = ImageDraw.Draw(sheet), picture.width + pad + bar_w + 4
    draw.text((x, 0), "near", fill="black", font=_font(size))
    draw.text((x, picture.height - size - 2), "far", fill="black", font=_font(size))
    return sheet
