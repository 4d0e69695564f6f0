"""ADE20K SceneParsing (``ADEChallengeData2016/images/{training,validation}/*.jpg`` and
``annotations/.../*.png``): 150 classes stored as 1..150, 0 = other. Labels are reduced as mmsegmentation's
``reduce_zero_label``: 0 (and 255) are ignored, every other value moves down by one."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mtv.errors import MTVError
from mtv.eval.benchmarks import Split, image_files, limit, need, read_map
from mtv.eval.metrics import IGNORE

LAYOUT = "ADE20K as <root>/ADEChallengeData2016/{images,annotations}/{training,validation}/"
NUM_CLASSES = 150


def _names(base: Path) -> list[str]:
    """Class names from ``objectInfo150.txt`` (tab-separated, name last) when shipped, else numbers."""
    info = base / "objectInfo150.txt"
    if info.exists():
        rows = [ln.split("\t") for ln in info.read_text().splitlines()[1:] if ln.strip()]
        if len(rows) == NUM_CLASSES:
            return [r[-1].split(";")[0].strip() for r in rows]
    return [f"class {i + 1}" for i in range(NUM_CLASSES)]


def reduce_zero_label(raw: np.ndarray) -> np.ndarray:
    """mmseg's ``reduce_zero_label`` on a stored map: 0 -> ignored, v -> v - 1, and 255 (mmseg's ignore index,
    which the shift would make 254 and mmseg maps back) stays ignored."""
    out = raw.astype(np.int64) - 1
    out[(raw == 0) | (raw == 255)] = IGNORE
    return out


def load_ade20k(root: Path, split: str = "validation", max_samples: int | None = None) -> Split:
    base = need(root / "ADEChallengeData2016", LAYOUT)
    images = limit(image_files(need(base / "images" / split, LAYOUT)), max_samples)
    labels = [base / "annotations" / split / (p.stem + ".png") for p in images]
    missing = next((p for p in labels if not p.exists()), None)
    if missing is not None:
        raise MTVError(f"{missing}: not found; every image needs its annotation PNG ({LAYOUT})")

    def seg(i: int) -> np.ndarray:
        return reduce_zero_label(read_map(str(labels[i])))

    return Split(f"ade20k-{split}", [str(p) for p in images], seg=seg, seg_classes=_names(base))
