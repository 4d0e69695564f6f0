"""KITTI Eigen test split in the BTS layout: ``eigen_test_files_with_gt.txt`` lines ``image gt focal`` with images
under ``raw/`` (``<date>/<drive>/image_02/data/*.png``) and ground truth under ``data_depth_annotated/``
(``<drive>/proj_depth/groundtruth/image_02/*.png``, uint16 / 256 metres, 0 invalid; ``None`` = no ground truth,
counted and skipped). Garg crop, 1e-3–80 m."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mtv.errors import SkipSample
from mtv.eval.benchmarks import Split, limit, lines, need, read_depth
from mtv.eval.depth_probe import DepthProtocol

LAYOUT = "KITTI as <root>/kitti/eigen_test_files_with_gt.txt with raw/ and data_depth_annotated/"
PROTOCOL = DepthProtocol(min_depth=1e-3, max_depth=80.0, crop="garg")


def load_kitti(root: Path, max_samples: int | None = None) -> Split:
    base = need(root / "kitti", LAYOUT)
    rows = limit(lines(base / "eigen_test_files_with_gt.txt", LAYOUT, 2), max_samples)
    gts = [None if r[1] == "None" else base / "data_depth_annotated" / r[1] for r in rows]

    def depth(i: int) -> np.ndarray:
        if gts[i] is None:
            raise SkipSample("no_ground_truth")
        return read_depth(gts[i], 256.0)

    return Split("kitti-eigen-test", [str(base / "raw" / r[0]) for r in rows], depth=depth,
                 depth_protocol=PROTOCOL)
