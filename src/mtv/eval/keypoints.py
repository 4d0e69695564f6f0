"""Semantic keypoint transfer and PCK (SPair-71k) under a named convention, so a report says which one produced
its number.

- ``centre`` (default, ours): the query's feature is sampled bilinearly from A's map (``align_corners=False``),
  B's map is upsampled bilinearly to at most 256 px a side and the prediction is the centre of its most similar
  pixel (`mtv.eval.correspondence.match`); a keypoint is correct when its error is ``<=`` alpha x the target box.
- ``probe3d`` (Probe3D's ``evaluate_spair_correspondence`` and ``SPairDataset``): each image is padded with white
  at the bottom and right to a square and resized to 800 px (`PROBE3D_VIEW`, applied by the feature pass); a
  keypoint is truncated to a whole pixel, scaled to 800 px and truncated again (Probe3D keeps keypoints in int
  tensors), and read as a fraction of 800 px; both maps are L2-normalised per cell, the query's feature is
  sampled bilinearly with ``align_corners=True`` at that fraction, the prediction is the top-left corner of B's
  most similar feature cell (no upsampling; the first of equal maxima) as a fraction of the cell count, and a
  keypoint is correct when its distance to B's truncated keypoint is strictly ``<`` alpha x the target box.
  Both fractions are of the padded square, so a point in pixels is the fraction x max(H, W).

PCK is averaged over keypoints within a class, then over classes; with SPair's ``viewpoint_variation`` (0, 1, 2)
it is also reported per viewpoint bin, averaged over the classes that have pairs in that bin, as Probe3D does.
"""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from mtv.eval.correspondence import match
from mtv.eval.features import ImageView
from mtv.eval.metrics import pck

Convention = Literal["centre", "probe3d"]
CONVENTIONS: tuple[Convention, ...] = ("centre", "probe3d")
DESCRIPTIONS = {
    "centre": "query sampled bilinearly (align_corners False); prediction at the centre of the best pixel of B's "
              "bilinearly upsampled map (<= 256 px a side); hit when error <= alpha x max(w, h) of the target box",
    "probe3d": "Probe3D: images padded with white to a square (bottom, right) and resized to 800 px; keypoints "
               "truncated to whole pixels before and after scaling to 800 px; maps L2-normalised per cell; query "
               "sampled bilinearly (align_corners True); prediction at the top-left corner of B's best feature "
               "cell; hit when error < alpha x max(w, h) of the target box",
}
PROBE3D_SIDE = 800  # Probe3D's SPair image_size
PROBE3D_VIEW = ImageView(side=PROBE3D_SIDE, pad_square=True, layers=False)
VIEWS = {"centre": ImageView(), "probe3d": PROBE3D_VIEW}  # how each convention's images enter the encoder


def probe3d_fraction(pts: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Probe3D's keypoint as a fraction of the padded square: truncated, scaled to `PROBE3D_SIDE`, truncated."""
    return np.floor(np.floor(pts) * PROBE3D_SIDE / max(size)) / PROBE3D_SIDE


def scored_points(pts: np.ndarray, size: tuple[int, int], convention: Convention = "centre") -> np.ndarray:
    """The target keypoints a prediction is scored against, in pixels: as stored, or Probe3D's truncated ones."""
    return probe3d_fraction(pts, size) * max(size) if convention == "probe3d" else np.asarray(pts, float)


def transfer(feat_a: torch.Tensor, size_a: tuple[int, int], pts_a: np.ndarray, feat_b: torch.Tensor,
             size_b: tuple[int, int], convention: Convention = "centre") -> np.ndarray:
    """Predicted points in B (M, 2), pixel-edge (x, y), for A's points; ``feat_*`` (D, h, w), ``size_*`` (H, W)."""
    if convention == "centre":
        return match(feat_a, size_a, pts_a, feat_b, size_b)
    if len(pts_a) == 0:
        return np.zeros((0, 2))
    fa, fb = F.normalize(feat_a.float(), dim=0), F.normalize(feat_b.float(), dim=0)
    grid = torch.as_tensor(probe3d_fraction(pts_a, size_a), dtype=torch.float32) * 2 - 1
    q = F.grid_sample(fa[None], grid[None, None], mode="bilinear", align_corners=True)[0, :, 0].T
    w = fb.shape[2]
    best = (q @ fb.flatten(1)).argmax(dim=1)
    corner = torch.stack([best % w, best // w], 1).double() / w  # Probe3D divides both by the width in cells
    return corner.numpy() * max(size_b)


def hits(pred: np.ndarray, truth: np.ndarray, bbox: Sequence[float], alpha: float,
         convention: Convention = "centre") -> torch.Tensor:
    """Per-keypoint correctness against alpha x the longer side of the target box (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = bbox
    return pck(torch.as_tensor(pred, dtype=torch.float64), torch.as_tensor(truth, dtype=torch.float64),
               torch.tensor(float(max(x1 - x0, y1 - y0))), alpha, strict=convention == "probe3d")


def class_mean(per_pair: Sequence[torch.Tensor], categories: Sequence[str]) -> tuple[float, dict[str, float]]:
    """PCK per class (over its keypoints) and their mean over classes."""
    by_class: dict[str, list[torch.Tensor]] = {}
    for h, c in zip(per_pair, categories):
        by_class.setdefault(c, []).append(h)
    per_class = {c: torch.cat(h).double().mean().item() for c, h in by_class.items()}
    return sum(per_class.values()) / len(per_class), per_class


def pck_metrics(per_pair: Sequence[torch.Tensor], categories: Sequence[str],
                viewpoints: Sequence[int | None]) -> tuple[dict[str, float], dict[str, float]]:
    """``corr_sem_pck`` and, for each viewpoint bin that pairs carry, ``corr_sem_pck_vp<bin>``; plus the
    per-class values of the whole set."""
    overall, per_class = class_mean(per_pair, categories)
    metrics = {"corr_sem_pck": overall}
    for v in sorted({v for v in viewpoints if v is not None}):
        sel = [i for i, vi in enumerate(viewpoints) if vi == v]
        metrics[f"corr_sem_pck_vp{v}"] = class_mean([per_pair[i] for i in sel], [categories[i] for i in sel])[0]
    return metrics, per_class
