"""The shard sample schema: every member of a sample and every field of its JSON, with the read and the write side.

A sample is a dict ``{"__key__": str, member: bytes, ...}``. Members:

- ``png`` / ``jpg`` / ``jpeg`` / ``webp`` (`IMAGE_EXTS`): the image, decoded by `mtv.data.decode.open_image`;
- ``txt`` (`CAPTION`): the caption, UTF-8;
- ``json`` (`META`): the fields below;
- ``depth.png`` (`DEPTH`): a uint16 depth map, ``value * scale + shift`` with 0 = invalid, described by the JSON
  ``depth`` entry (``type`` ``metric`` from MTV World, ``inverse_relative`` once `mtv label` has run);
- ``metric.depth.png`` (`METRIC_DEPTH`): the world's metric depth after labelling moved it aside (JSON
  ``depth_metric``);
- ``seg.png`` (`SEG`), ``view2.png``, ``view2.depth.png``, ``view2.seg.png`` (`VIEW2`, `VIEW2_DEPTH`,
  `VIEW2_SEG`): MTV World's semantic labels and its second camera (JSON ``view2`` and ``view2_depth``).

JSON fields: ``class``, ``class_id``, ``main``, ``objects`` (MTV World: ``box`` xyxy pixels and ``phrase`` per
object), ``pseudo_boxes`` (`mtv label`: ``box``, ``phrase``, ``score``), ``camera`` (``K``, ``world_to_cam``),
``depth``, ``depth_metric``, ``view2``, ``view2_depth``. Anything undecodable raises SkipSample with the reason.
"""

from __future__ import annotations

import io
import json

import numpy as np
from PIL import Image, UnidentifiedImageError

from mtv.data.decode import open_image
from mtv.errors import SkipSample

IMAGE_EXTS = ("png", "jpg", "jpeg", "webp")
CAPTION, META = "txt", "json"
DEPTH, METRIC_DEPTH, SEG = "depth.png", "metric.depth.png", "seg.png"
VIEW2, VIEW2_DEPTH, VIEW2_SEG = "view2.png", "view2.depth.png", "view2.seg.png"
DEPTH_LEVELS = 65535  # uint16; 0 is reserved for invalid pixels


# ---- read side ------------------------------------------------------------------------------------------------

def image_key(sample: dict) -> str | None:
    return next((ext for ext in IMAGE_EXTS if ext in sample), None)


def decode_image(sample: dict, ext: str | None = None) -> Image.Image:
    """The sample's image (or member ``ext``), decoded by `open_image`."""
    ext = ext or image_key(sample)
    if ext is None or ext not in sample:
        raise SkipSample("no_image")
    return open_image(sample[ext])


def decode_caption(sample: dict) -> str:
    raw = sample.get(CAPTION)
    if raw is None:
        raise SkipSample("no_caption")
    text = raw.decode("utf-8", errors="replace").strip()
    if not text:
        raise SkipSample("empty_caption")
    return text


def decode_json(sample: dict) -> dict:
    raw = sample.get(META)
    if raw is None:
        return {}
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise SkipSample("bad_json") from None


def decode_depth(sample: dict, meta: dict, ext: str = DEPTH) -> np.ndarray:
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


def metric_depth(sample: dict, meta: dict, view2: bool = False) -> np.ndarray:
    """MTV World's metric z-depth (NaN = invalid), of the first view or of ``view2``; in a labelled shard the
    first view's is under ``depth_metric`` / ``metric.depth.png``."""
    if view2:
        return decode_depth(sample, meta.get("view2_depth", {}), VIEW2_DEPTH)
    if "depth_metric" in meta and METRIC_DEPTH in sample:
        return decode_depth(sample, meta["depth_metric"], METRIC_DEPTH)
    if (meta.get("depth") or {}).get("type") == "metric" and DEPTH in sample:
        return decode_depth(sample, meta["depth"])
    raise SkipSample("no_metric_depth")


def sample_boxes(meta: dict, min_score: float, max_boxes: int) -> tuple[np.ndarray, list[str]]:
    """Pseudo-boxes (``mtv label``) above ``min_score``, best first; MTV World's own boxes when unlabelled."""
    if "pseudo_boxes" in meta:
        found = [(b.get("score", 1.0), b["box"], b["phrase"]) for b in meta["pseudo_boxes"]]
    else:
        found = [(1.0, o["box"], o["phrase"]) for o in meta.get("objects", []) if o.get("box")]
    found = [f for f in found if f[0] >= min_score and f[1][2] > f[1][0] and f[1][3] > f[1][1]]
    found = sorted(found, key=lambda f: -f[0])[:max_boxes]
    return np.array([f[1] for f in found], np.float32).reshape(-1, 4), [f[2] for f in found]


def sample_inverse_depth(raw: dict, meta: dict) -> np.ndarray | None:
    """Relative inverse depth (what Depth Anything predicts); metric depth (MTV World) is inverted."""
    info = meta.get("depth")
    if not info or DEPTH not in raw:
        return None
    depth = decode_depth(raw, info, DEPTH)
    if info.get("type") == "metric":
        with np.errstate(divide="ignore", invalid="ignore"):
            depth = np.where(depth > 0, 1.0 / depth, np.nan).astype(np.float32)
    return depth


# ---- write side -----------------------------------------------------------------------------------------------

def encode_json(obj: dict) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def encode_png(array) -> bytes:
    """PNG bytes of a uint8 (H, W[, 3]) or uint16 (H, W) array, without timestamps."""
    img = Image.fromarray(np.ascontiguousarray(array))  # uint16 (H, W) becomes mode "I;16"
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def encode_inverse_depth(inv: np.ndarray) -> tuple[bytes, dict]:
    """``depth.png`` bytes and the JSON ``depth`` entry for a float inverse-depth map (NaN/inf = invalid).

    Valid values map linearly onto 1..65535 (min → 1, max → 65535), so `decode_depth` (value·scale + shift,
    0 → NaN) recovers them to within (max − min) / 65534.
    """
    valid = np.isfinite(inv)
    q = np.zeros(inv.shape, np.uint16)
    if not valid.any():
        return encode_png(q), {"type": "inverse_relative", "scale": 1.0, "shift": 0.0}
    lo, hi = float(inv[valid].min()), float(inv[valid].max())
    scale = (hi - lo) / (DEPTH_LEVELS - 1) if hi > lo else 1.0
    shift = lo - scale
    q[valid] = np.clip(np.rint((inv[valid] - shift) / scale), 1, DEPTH_LEVELS)
    return encode_png(q), {"type": "inverse_relative", "scale": scale, "shift": shift}


def encode_metric_depth(depth: np.ndarray, scale: float) -> bytes:
    """``depth.png`` bytes of a metric depth map (JSON ``depth``: ``{"type": "metric", "scale": scale,
    "shift": 0}``), ``round(depth / scale)`` per uint16 step; NaN (no surface) is stored as 0."""
    q = np.where(np.isnan(depth), 0, np.clip(np.round(np.nan_to_num(depth) / scale), 1, DEPTH_LEVELS))
    return encode_png(q.astype(np.uint16))
