"""SPair-71k test pairs: ``SPair-71k/PairAnnotation/test/*.json`` (``src_imname``, ``trg_imname``, ``category``,
``src_kps``, ``trg_kps``, ``trg_bndbox``, ``viewpoint_variation``) with images in ``JPEGImages/<category>/``.
Keypoint pairs outside either image are skipped and counted; a viewpoint_variation other than 0, 1 or 2 leaves
the pair out of the viewpoint bins only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from mtv.errors import MTVError
from mtv.eval.benchmarks import Split, limit, need
from mtv.eval.correspondence import Pair

VIEWPOINT_BINS = (0, 1, 2)  # SPair's viewpoint_variation: small, medium, large
LAYOUT = "SPair-71k as <root>/SPair-71k/{PairAnnotation/test/*.json,JPEGImages/<category>/*.jpg}"


def _size(path: Path, cache: dict) -> tuple[int, int] | None:
    if path not in cache:
        try:
            with Image.open(path) as im:
                cache[path] = im.size
        except (OSError, UnidentifiedImageError):
            cache[path] = None
    return cache[path]


def load_spair(root: Path, max_samples: int | None = None) -> Split:
    base = need(root / "SPair-71k", LAYOUT)
    files = limit(sorted(need(base / "PairAnnotation" / "test", LAYOUT).glob("*.json")), max_samples)
    if not files:
        raise MTVError(f"{base / 'PairAnnotation' / 'test'}: no pair annotation (*.json); {LAYOUT}")
    split = Split("spair-test", [])
    index: dict[str, int] = {}
    sizes: dict = {}
    pairs = []
    for f in files:
        try:
            a = json.loads(f.read_text())
            cat = a["category"]
            src, trg = base / "JPEGImages" / cat / a["src_imname"], base / "JPEGImages" / cat / a["trg_imname"]
            kps_a = np.asarray(a["src_kps"], float).reshape(-1, 2)
            kps_b = np.asarray(a["trg_kps"], float).reshape(-1, 2)
            bbox = tuple(float(v) for v in a["trg_bndbox"])
            viewpoint = a.get("viewpoint_variation")
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            split.skipped["corr_sem/bad_annotation"] += 1
            continue
        sa, sb = _size(src, sizes), _size(trg, sizes)
        if sa is None or sb is None:
            split.skipped["corr_sem/bad_image"] += 1
            continue
        inside = np.all((kps_a >= 0) & (kps_a < sa), 1) & np.all((kps_b >= 0) & (kps_b < sb), 1)
        split.skipped["corr_sem/keypoint_outside"] += int((~inside).sum())
        if not inside.any():
            continue
        ids = [index.setdefault(str(p), len(index)) for p in (src, trg)]
        pairs.append(Pair(ids[0], ids[1], kps_a[inside], kps_b[inside], category=cat, bbox=bbox,
                          viewpoint=viewpoint if viewpoint in VIEWPOINT_BINS else None))
    split.images = list(index)
    split.sem_pairs = pairs
    return split
