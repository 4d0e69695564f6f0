"""Evaluation data: MTV World shards and the real benchmarks in their published on-disk layouts, each turned
into `Split`s that the probes of `mtv.eval.suite` read. Images and label maps are opened on demand, so a split of
large photos costs paths, not pixels; anything unreadable raises `SkipSample` and is counted, never a crash."""

from __future__ import annotations

import io
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, UnidentifiedImageError

from mtv.errors import MTVError, SkipSample
from mtv.eval.correspondence import PROBE3D, Pair
from mtv.eval.depth_probe import DepthProtocol

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


@dataclass
class Split:
    """One set of images and whichever labels its data set has; pairs index ``images`` (a) and
    ``partner.images`` (b; the split itself when None)."""

    name: str
    images: list[str | bytes]  # a file path or the encoded image
    labels: list[int] | None = None  # zero-shot class per image, -1 none
    classes: list[str] | None = None
    templates: list[str] | None = None
    template_set: str | None = None  # where the templates come from (`mtv.eval.zeroshot.template_set`)
    captions: list[list[str]] | None = None
    seg: Callable[[int], np.ndarray] | None = None  # int64 (H, W), IGNORE = -1
    seg_classes: list[str] | None = None
    depth: Callable[[int], np.ndarray] | None = None  # float32 (H, W) metric, NaN invalid
    depth_protocol: DepthProtocol | None = None
    phrases: list[list[tuple[str, list[float]]]] | None = None  # (phrase, xyxy px box) per image
    geo_pairs: list[Pair] | None = None
    geo_protocols: tuple[str, ...] = (PROBE3D,)  # the first owns the corr_geo_recall* names (`probe_corr_geo`)
    geo_headline: float = 0.05  # one of suite.GEO_THRESHOLDS: the mtv protocol's corr_geo_recall
    partner: Split | None = None
    sem_pairs: list[Pair] | None = None
    skipped: Counter = field(default_factory=Counter)

    def __len__(self) -> int:
        return len(self.images)


def read_map(src: str | bytes) -> np.ndarray:
    """A label or depth PNG as its raw integer array."""
    try:
        return np.asarray(Image.open(io.BytesIO(src) if isinstance(src, bytes) else src))
    except (UnidentifiedImageError, OSError, ValueError):
        raise SkipSample("bad_label") from None


def read_depth(path: Path, units_per_metre: float) -> np.ndarray:
    """A 16-bit depth PNG in metres, its zeros (no measurement) as NaN — the NYUv2 and KITTI encoding."""
    if not path.exists():
        raise SkipSample("no_depth_file")
    d = read_map(str(path)).astype(np.float32) / units_per_metre
    d[d == 0] = np.nan
    return d


class MissingData(MTVError):
    """A benchmark that is not on disk (as opposed to one that is there but malformed)."""


def need(path: Path, layout: str) -> Path:
    """``path`` if it exists, else the one-line error that names it and the layout it belongs to."""
    if not path.exists():
        raise MissingData(f"{path}: not found; expected {layout}")
    return path


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def lines(path: Path, layout: str, fields: int) -> list[list[str]]:
    """Whitespace-separated rows of a split list, each with at least ``fields`` fields."""
    rows = [ln.split() for ln in need(path, layout).read_text().splitlines() if ln.strip()]
    bad = next((i for i, r in enumerate(rows) if len(r) < fields), None)
    if bad is not None:
        raise MTVError(f"{path}:{bad + 1}: expected {fields} fields per line ({layout})")
    return rows


def limit(items: list, max_samples: int | None) -> list:
    return items if max_samples is None else items[:max_samples]


def real_root(root: str | os.PathLike) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise MTVError(f"{root}: not a directory; --data for the real suite is the folder holding the benchmarks")
    return root
