"""Geometric and semantic correspondence by nearest neighbour on upsampled dense features (no training).

Geometric (NAVI protocol, MTV World analog): ground-truth matches come from depth, intrinsics and the relative
pose — a pixel of view A is back-projected with its depth, moved into view B and projected; it is kept only if
it lands inside B and B's own depth agrees (not occluded). The predicted match of a query is the pixel of B
whose upsampled feature is most similar; recall counts matches within a pixel threshold, given as a fraction of
B's longer side so that 64-px worlds and 512-px photos share thresholds (0.01/0.05/0.10 ≈ Probe3D's 5/25/50 px
at 512 px).

Semantic (SPair-71k protocol, MTV World analog): two *different* scenes whose main objects have the same shape
(colours may differ), with five keypoints that mean the same thing on any object of that shape — the centroid
of its pixels and its top-, bottom-, left- and right-most pixels. PCK@0.1 counts a keypoint correct when its
match lies within 0.1 × the target box's longer side; scores are averaged per class, then over classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

MAX_MATCH_SIDE = 256  # target feature maps are upsampled to at most this side; predictions scale back


@dataclass
class Pair:
    """Points (M, 2) in pixel-edge (x, y) of image ``a`` and their truth in image ``b``; ``bbox`` is the target
    object's box (semantic pairs), ``category`` its class."""

    a: int
    b: int
    pts_a: np.ndarray
    pts_b: np.ndarray
    category: str = ""
    bbox: tuple[float, float, float, float] | None = None


def gt_matches(depth_a: np.ndarray, K_a: np.ndarray, depth_b: np.ndarray, K_b: np.ndarray, a_to_b: np.ndarray,
               count: int, rng: np.random.Generator, rel_tol: float = 0.02) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``count`` visible matches (pts_a, pts_b), sampled among A's valid pixels. OpenCV cameras, metric
    z-depth with NaN invalid; ``rel_tol`` is the depth disagreement (relative) that still counts as visible."""
    v, u = np.nonzero(np.isfinite(depth_a) & (depth_a > 0))
    if len(u) == 0:
        return np.zeros((0, 2)), np.zeros((0, 2))
    pts_a = np.stack([u + 0.5, v + 0.5], 1)
    z = depth_a[v, u]
    rays = np.linalg.solve(K_a, np.concatenate([pts_a, np.ones((len(u), 1))], 1).T)
    cam_b = a_to_b[:3, :3] @ (rays * z) + a_to_b[:3, 3:4]
    with np.errstate(divide="ignore", invalid="ignore"):
        proj = K_b @ cam_b
        pts_b = (proj[:2] / proj[2]).T
    h, w = depth_b.shape
    inside = (cam_b[2] > 0) & (pts_b[:, 0] >= 0) & (pts_b[:, 0] < w) & (pts_b[:, 1] >= 0) & (pts_b[:, 1] < h)
    keep = np.flatnonzero(inside)
    zb = depth_b[pts_b[keep, 1].astype(int), pts_b[keep, 0].astype(int)]
    keep = keep[np.abs(zb - cam_b[2, keep]) <= rel_tol * cam_b[2, keep]]  # NaN (sky) compares False
    keep = rng.permutation(keep)[:count]
    return pts_a[keep], pts_b[keep]


def match(feat_a: torch.Tensor, size_a: tuple[int, int], pts_a: np.ndarray, feat_b: torch.Tensor,
          size_b: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour matches in B (M, 2) for A's points. ``feat_*`` (D, h, w) patch features; ``size_*`` the
    images' (H, W). A's features are sampled bilinearly at the points, B's upsampled bilinearly; cosine
    similarity; the best pixel's centre, mapped back to B's pixels, is the prediction."""
    if len(pts_a) == 0:
        return np.zeros((0, 2))
    ha, wa = size_a
    grid = torch.as_tensor(pts_a, dtype=torch.float32) / torch.tensor([wa, ha]) * 2 - 1
    q = F.grid_sample(feat_a[None].float(), grid[None, None], mode="bilinear", align_corners=False)[0, :, 0].T
    hb, wb = size_b
    scale = min(1.0, MAX_MATCH_SIDE / max(hb, wb))
    up = (max(1, round(hb * scale)), max(1, round(wb * scale)))
    t = F.interpolate(feat_b[None].float(), size=up, mode="bilinear", align_corners=False)[0].flatten(1)
    best = (F.normalize(q, dim=1) @ F.normalize(t, dim=0)).argmax(1)
    rows, cols = best // up[1], best % up[1]
    return torch.stack([(cols + 0.5) * wb / up[1], (rows + 0.5) * hb / up[0]], 1).numpy()


def object_keypoints(mask: np.ndarray) -> np.ndarray | None:
    """Centroid, top-, bottom-, left- and right-most pixel (centres) of a boolean object mask, (5, 2) xy; the
    extremes average over ties so they are unique. None for an empty mask."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None

    def at(sel):
        return [xs[sel].mean() + 0.5, ys[sel].mean() + 0.5]

    return np.array([[xs.mean() + 0.5, ys.mean() + 0.5], at(ys == ys.min()), at(ys == ys.max()),
                     at(xs == xs.min()), at(xs == xs.max())])
