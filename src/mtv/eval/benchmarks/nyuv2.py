"""NYUv2 in the BTS / Depth Anything layout: ``nyu/official_splits/test/<scene>/rgb_XXXXX.jpg`` with
``sync_depth_XXXXX.png`` (uint16 millimetres, 0 invalid), listed in ``nyudepthv2_test_files_with_gt.txt`` (the common
654-image Eigen test split; lines ``rgb depth focal``); the training list reads ``sync/``. 1e-3–10 m, no crop:
Probe3D scores NYUv2 without the Eigen crop (its ``evaluate_depth`` keeps ``nyu_crop=False``); ``EIGEN_PROTOCOL``
is the crop of the monocular-depth literature."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mtv.eval.benchmarks import Split, limit, lines, need, read_depth
from mtv.eval.depth_probe import DepthProtocol

LAYOUT = "NYUv2 as <root>/nyu/nyudepthv2_{test,train}_files_with_gt.txt with official_splits/test/ and sync/"
PROTOCOL = DepthProtocol(min_depth=1e-3, max_depth=10.0)
EIGEN_PROTOCOL = DepthProtocol(min_depth=1e-3, max_depth=10.0, crop="eigen")


def load_nyuv2(root: Path, split: str = "test", max_samples: int | None = None,
               protocol: DepthProtocol = PROTOCOL) -> Split:
    base = need(root / "nyu", LAYOUT)
    folder = base / ("official_splits/test" if split == "test" else "sync")
    rows = limit(lines(base / f"nyudepthv2_{split}_files_with_gt.txt", LAYOUT, 2), max_samples)
    images = [str(folder / r[0].lstrip("/")) for r in rows]
    depths = [folder / r[1].lstrip("/") for r in rows]

    def depth(i: int) -> np.ndarray:
        return read_depth(depths[i], 1000.0)

    return Split(f"nyuv2-{split}", images, depth=depth, depth_protocol=protocol)
