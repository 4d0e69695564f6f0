"""Geometric and semantic correspondence by nearest neighbour on upsampled dense features (no training).

Geometric (NAVI protocol, MTV World analog): ground-truth matches come from depth, intrinsics and the relative
pose — a pixel of view A is back-projected with its depth, moved into view B and projected; it is kept only if
it lands inside B and B's own depth agrees (not occluded). The predicted match of a query is the pixel of B
whose upsampled feature is most similar; recall counts matches within a pixel threshold, given as a fraction of
B's longer side so that 64-px worlds and 512-px photos share thresholds (0.01/0.05/0.10 ≈ Probe3D's 5/25/50 px
at 512 px).

Also as Probe3D (`geo_metrics`): Lowe's ratio test (``RATIO_TEST``, distance ratio 0.8 on L2-normalised
features, the second-best neighbour sought at least one feature patch away from the best), 3-D error recall
(the predicted pixel of B back-projected with B's depth and intrinsics, against the true 3-D point; 1, 2, 5 ×
the loader's step: 1 cm on NAVI, 0.1 scene units on MTV World) and recall by the relative viewing angle (the
rotation angle between the two cameras) in bins 0–30–60–90–120°. The plain pixel recalls (``corr_geo_recall``,
``corr_geo_recall_NN``) keep their meaning — nearest neighbour, no ratio test — in both suites; the ratio test
applies to ``corr_geo_recall_ratio*``, ``corr_geo_recall_3d_*`` and ``corr_geo_recall_angle_*``.

Probe3D's own NAVI protocol (``PROBE3D``, `score_probe3d_pair`, `probe3d_metrics`): both views' depth maps are
back-projected into per-pixel 3-D point grids and subsampled by nearest neighbour to a quarter of the image side
(Probe3D's ``scale_factor`` 0.25 of its 512-px crops; at most 128 points a side here, as there); the patch
features are upsampled bicubically to that grid. Every valid point of A (depth > 0) is matched to its two
nearest valid points of B by cosine distance, the matches are ranked by 1 - d1/d2 and the best 1000 kept (no
threshold). A match's 3-D error is the distance between A's point moved into B's frame and the matched point of
B (no visibility test: the error is measured in 3-D); its 2-D error the distance of both projected into B.
Recall at 1, 2, 5 steps (1, 2, 5 cm on NAVI; 2 is the headline), 2-D recall at 0.01/0.05/0.10 of B's longer side
(Probe3D's 5/25/50 px at 512 px), and the 2-step recall averaged per pair in half-open bins 0-30-60-90-120°.

Semantic (SPair-71k protocol, MTV World analog): two *different* scenes whose main objects have the same shape
(colours may differ), with five keypoints that mean the same thing on any object of that shape — the centroid
of its pixels and its top-, bottom-, left- and right-most pixels. PCK@0.1 counts a keypoint correct when its
match lies within 0.1 × the target box's longer side; scores are averaged per class, then over classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from mtv.eval.metrics import binned_recall, ratio_test, recall_at, rotation_angle

MAX_MATCH_SIDE = 256  # target feature maps are upsampled to at most this side; predictions scale back
RATIO_TEST = 0.8  # Lowe's distance ratio; None switches the test off
STEPS_3D = (1, 2, 5)  # 3-D thresholds in units of `GeoTruth.step` (Probe3D: 1, 2, 5 cm)
ANGLE_BINS = (0.0, 30.0, 60.0, 90.0, 120.0)  # degrees of relative camera rotation
_CHUNK = 256  # queries per similarity block
PROBE3D = "probe3d"
MTV = "mtv"
GEO_PROTOCOLS = (MTV, PROBE3D)
PROBE3D_MATCHES = 1000  # matches kept per pair, ranked by the ratio weight
PROBE3D_GRID_FACTOR = 0.25  # point grid side / image side (Probe3D's scale_factor)
PROBE3D_MAX_GRID = 128  # Probe3D's 0.25 x 512 px: larger photos are subsampled to this longer side
PROBE3D_HEADLINE_STEP = 2  # 2 cm on NAVI


@dataclass
class GeoTruth:
    """3-D truth of a geometric pair: ``xyz_b`` (M, 3) the true points in B's camera frame, ``angle`` the
    rotation between the cameras (degrees), ``target()`` B's (depth, K) loaded on demand, ``step`` the 3-D
    threshold unit in depth units, named ``unit``; ``source()`` A's (depth, K) and ``a_to_b`` the relative
    pose (4x4, A's camera to B's), which the Probe3D protocol needs."""

    xyz_b: np.ndarray
    angle: float
    target: Callable[[], tuple[np.ndarray, np.ndarray]]
    step: float
    unit: str
    source: Callable[[], tuple[np.ndarray, np.ndarray]] | None = None
    a_to_b: np.ndarray | None = None


@dataclass
class Pair:
    """Points (M, 2) in pixel-edge (x, y) of image ``a`` and their truth in image ``b``; ``bbox`` is the target
    object's box (semantic pairs), ``category`` its class, ``viewpoint`` SPair's viewpoint-variation bin."""

    a: int
    b: int
    pts_a: np.ndarray
    pts_b: np.ndarray
    category: str = ""
    bbox: tuple[float, float, float, float] | None = None
    geo: GeoTruth | None = None
    viewpoint: int | None = None


def gt_matches(depth_a: np.ndarray, K_a: np.ndarray, depth_b: np.ndarray, K_b: np.ndarray, a_to_b: np.ndarray,
               count: int, rng: np.random.Generator, rel_tol: float = 0.02,
               with_xyz: bool = False) -> tuple[np.ndarray, ...]:
    """Up to ``count`` visible matches (pts_a, pts_b), sampled among A's valid pixels. OpenCV cameras, metric
    z-depth with NaN invalid; ``rel_tol`` is the depth disagreement (relative) that still counts as visible.
    ``with_xyz`` adds the matches' 3-D points in B's camera frame (M, 3)."""
    v, u = np.nonzero(np.isfinite(depth_a) & (depth_a > 0))
    if len(u) == 0:
        return (np.zeros((0, 2)), np.zeros((0, 2))) + ((np.zeros((0, 3)),) if with_xyz else ())
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
    return (pts_a[keep], pts_b[keep]) + ((cam_b[:, keep].T,) if with_xyz else ())


def relative_angle(a_to_b: np.ndarray) -> float:
    """Rotation angle (degrees) between two cameras from the relative pose (4x4 or 3x3)."""
    return rotation_angle(torch.as_tensor(np.asarray(a_to_b)[:3, :3]))


def back_project(pts: np.ndarray, depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """3-D points (M, 3) in the camera frame of pixel-edge points (M, 2), with the depth of the pixel each falls
    in; NaN outside the image or where the depth is invalid."""
    h, w = depth.shape
    u, v = np.floor(pts[:, 0]).astype(int), np.floor(pts[:, 1]).astype(int)
    inside = (u >= 0) & (u < w) & (v >= 0) & (v < h)
    z = np.full(len(pts), np.nan)
    z[inside] = depth[v[inside], u[inside]]
    z[~(z > 0)] = np.nan
    rays = np.linalg.solve(K, np.concatenate([pts, np.ones((len(pts), 1))], 1).T).T
    return rays * z[:, None]


def match(feat_a: torch.Tensor, size_a: tuple[int, int], pts_a: np.ndarray, feat_b: torch.Tensor,
          size_b: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour matches in B (M, 2) for A's points. ``feat_*`` (D, h, w) patch features; ``size_*`` the
    images' (H, W). A's features are sampled bilinearly at the points, B's upsampled bilinearly; cosine
    similarity; the best pixel's centre, mapped back to B's pixels, is the prediction."""
    return match_scores(feat_a, size_a, pts_a, feat_b, size_b)[0]


def match_scores(feat_a: torch.Tensor, size_a: tuple[int, int], pts_a: np.ndarray, feat_b: torch.Tensor,
                 size_b: tuple[int, int]) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    """`match`'s predictions plus, per query, the cosine similarity of the best pixel and of the second best
    at least one feature patch away from it (Chebyshev distance in the upsampled map) — the ratio test's
    neighbours; the upsampled map is smooth, so the best's own neighbours would always tie with it."""
    if len(pts_a) == 0:
        return np.zeros((0, 2)), torch.zeros(0), torch.zeros(0)
    ha, wa = size_a
    grid = torch.as_tensor(pts_a, dtype=torch.float32) / torch.tensor([wa, ha]) * 2 - 1
    q = F.grid_sample(feat_a[None].float(), grid[None, None], mode="bilinear", align_corners=False)[0, :, 0].T
    hb, wb = size_b
    scale = min(1.0, MAX_MATCH_SIDE / max(hb, wb))
    up = (max(1, round(hb * scale)), max(1, round(wb * scale)))
    t = F.normalize(F.interpolate(feat_b[None].float(), size=up, mode="bilinear", align_corners=False)[0].flatten(1),
                    dim=0)
    q = F.normalize(q, dim=1)
    patch = (up[0] / feat_b.shape[1], up[1] / feat_b.shape[2])  # one feature patch in upsampled pixels
    grid_r = torch.arange(up[0]).repeat_interleave(up[1])
    grid_c = torch.arange(up[1]).repeat(up[0])
    bests, s1, s2 = [], [], []
    for i in range(0, len(q), _CHUNK):
        sim = q[i:i + _CHUNK] @ t
        top, best = sim.max(1)
        near = ((grid_r[None] - (best // up[1])[:, None]).abs() < patch[0]) \
            & ((grid_c[None] - (best % up[1])[:, None]).abs() < patch[1])
        second = sim.masked_fill(near, -torch.inf).max(1).values
        bests.append(best), s1.append(top), s2.append(second)
    best = torch.cat(bests)
    rows, cols = best // up[1], best % up[1]
    pred = torch.stack([(cols + 0.5) * wb / up[1], (rows + 0.5) * hb / up[0]], 1).numpy()
    return pred, torch.cat(s1), torch.cat(s2)


@dataclass
class GeoResult:
    """One pair's scores: pixel errors as fractions of B's longer side, the ratio test's similarities, 3-D
    errors (None without 3-D truth) and the relative angle."""

    px: torch.Tensor
    best: torch.Tensor
    second: torch.Tensor
    err_3d: torch.Tensor | None = None
    angle: float | None = None
    step: float = 1.0
    unit: str = ""


def score_geo_pair(pair: Pair, feat_a: torch.Tensor, size_a: tuple[int, int], feat_b: torch.Tensor,
                   size_b: tuple[int, int]) -> GeoResult:
    """Match one pair and measure everything `geo_metrics` reports."""
    pred, best, second = match_scores(feat_a, size_a, pair.pts_a, feat_b, size_b)
    px = torch.as_tensor(pred - pair.pts_b).norm(dim=1) / max(size_b)
    if pair.geo is None:
        return GeoResult(px, best, second)
    depth_b, K_b = pair.geo.target()
    err = torch.as_tensor(np.linalg.norm(back_project(pred, depth_b, K_b) - pair.geo.xyz_b, axis=1))
    return GeoResult(px, best, second, err, pair.geo.angle, pair.geo.step, pair.geo.unit)


def threshold_tag(t: float) -> str:
    """The metric-name suffix of a pixel threshold: 0.05 -> "05" (``corr_geo_recall_05``)."""
    return f"{round(t * 100):02d}"


def geo_metrics(results: Sequence[GeoResult], thresholds: Sequence[float] = (0.01, 0.05, 0.10),
                headline: float = 0.05, ratio: float | None = RATIO_TEST) -> tuple[dict, dict]:
    """Metrics and config of the geometric probe, matches pooled over pairs. Plain pixel recall
    (``corr_geo_recall``, ``corr_geo_recall_NN``, no ratio test); with ``ratio``, the same after the ratio test
    (``corr_geo_recall_ratio*``, failures count as misses); 3-D recall ``corr_geo_recall_3d_<k>`` (error below
    k × step, ``STEPS_3D``) and ``corr_geo_recall_angle_<lo>_<hi>`` (pixel recall at ``headline`` per angle
    bin; empty bins left out), both after the ratio test when there is one."""
    px = torch.cat([r.px for r in results]).double()
    rec = recall_at(px, thresholds)
    metrics = {"corr_geo_recall": rec[headline], **{f"corr_geo_recall_{threshold_tag(t)}": v for t, v in rec.items()}}
    passed = torch.cat([ratio_test(r.best, r.second, ratio) if ratio is not None
                        else torch.ones(len(r.px), dtype=torch.bool) for r in results])
    tested = torch.where(passed, px, torch.full_like(px, torch.nan))
    if ratio is not None:
        rec = recall_at(tested, thresholds)
        metrics |= {"corr_geo_recall_ratio": rec[headline],
                    **{f"corr_geo_recall_ratio_{threshold_tag(t)}": v for t, v in rec.items()}}
    config = {"ratio_test": ratio if ratio is not None else False,
              "ratio_applies_to": "corr_geo_recall_ratio*, _3d_*, _angle_* (corr_geo_recall and _NN: plain "
                                  "nearest neighbour)" if ratio is not None else "none"}
    sizes = [len(r.px) for r in results]
    start = np.cumsum([0] + sizes)
    with_3d = [k for k, r in enumerate(results) if r.err_3d is not None]
    if with_3d:
        err = torch.cat([torch.where(passed[start[k]:start[k + 1]], results[k].err_3d.double() / results[k].step,
                                     torch.nan) for k in with_3d])
        metrics |= {f"corr_geo_recall_3d_{s}": v for s, v in recall_at(err, STEPS_3D).items()}
        config["thresholds_3d"] = f"{', '.join(map(str, STEPS_3D))} {results[with_3d[0]].unit}"
        angles = torch.cat([torch.full((sizes[k],), results[k].angle) for k in with_3d])
        hits = torch.cat([tested[start[k]:start[k + 1]] for k in with_3d]) < headline
        metrics |= {f"corr_geo_recall_angle_{lo:g}_{hi:g}": v
                    for (lo, hi), v in binned_recall(hits, angles, ANGLE_BINS).items()}
        config["angle_bins"] = "-".join(f"{a:g}" for a in ANGLE_BINS) + " deg, pixel recall at headline"
    return metrics, config


def point_grid(depth: np.ndarray, K: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
    """Probe3D's point grid of one view: every pixel centre back-projected with its depth, then subsampled by
    nearest neighbour to `PROBE3D_GRID_FACTOR` of the image side (at most `PROBE3D_MAX_GRID`); (3, h, w) camera
    coordinates with z = 0 where the depth is invalid, and (h, w)."""
    H, W = depth.shape
    v, u = np.mgrid[0:H, 0:W]
    rays = np.linalg.solve(K, np.stack([u.ravel() + 0.5, v.ravel() + 0.5, np.ones(H * W)]))
    z = np.nan_to_num(depth.astype(np.float64).ravel(), nan=0.0)
    xyz = torch.as_tensor((rays * np.where(z > 0, z, 0.0)).reshape(3, H, W), dtype=torch.float32)
    factor = min(PROBE3D_GRID_FACTOR, PROBE3D_MAX_GRID / max(H, W))
    size = (max(2, int(H * factor)), max(2, int(W * factor)))
    return F.interpolate(xyz[None], size=size, mode="nearest")[0], size


@dataclass
class Probe3DResult:
    """One pair's kept matches under the Probe3D protocol: 3-D errors (depth units), 2-D errors as fractions
    of B's longer side, the pair's relative angle and its 3-D step."""

    err_3d: torch.Tensor
    err_px: torch.Tensor
    angle: float
    step: float
    unit: str


def ratio_matches(feat_a: torch.Tensor, feat_b: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (into A's rows, into B's rows) of the ``count`` matches with the highest 1 - d1/d2, d the cosine
    distances of an A row to its two nearest B rows (each distance floored at 1e-9, as Probe3D)."""
    a, b = F.normalize(feat_a.float(), dim=1), F.normalize(feat_b.float(), dim=1)
    weights, nearest = [], []
    for i in range(0, len(a), _CHUNK):
        top = (a[i:i + _CHUNK] @ b.T).topk(2, dim=1)
        dist = (1 - top.values).clamp_min(1e-9)
        weights.append(1 - dist[:, 0] / dist[:, 1])
        nearest.append(top.indices[:, 0])
    keep = torch.cat(weights).topk(min(count, len(a))).indices
    return keep, torch.cat(nearest)[keep]


def score_probe3d_pair(pair: Pair, feat_a: torch.Tensor, feat_b: torch.Tensor, size_b: tuple[int, int],
                       count: int = PROBE3D_MATCHES) -> Probe3DResult | None:
    """Match one pair as Probe3D's NAVI evaluation does (module docstring); None when either view has fewer
    than two valid points."""
    geo = pair.geo
    if geo is None or geo.source is None or geo.a_to_b is None:
        raise ValueError("the Probe3D protocol needs both views' depth and the relative pose (GeoTruth.source)")
    (xyz_a, grid_a), (xyz_b, grid_b) = point_grid(*geo.source()), point_grid(*geo.target())
    fa = F.interpolate(feat_a[None].float(), size=grid_a, mode="bicubic", align_corners=False)[0]
    fb = F.interpolate(feat_b[None].float(), size=grid_b, mode="bicubic", align_corners=False)[0]
    valid_a, valid_b = xyz_a[2] > 0, xyz_b[2] > 0
    if valid_a.sum() < 2 or valid_b.sum() < 2:
        return None
    ia, ib = ratio_matches(fa[:, valid_a].T, fb[:, valid_b].T, count)
    rt = torch.as_tensor(geo.a_to_b, dtype=torch.float32)
    a_in_b = xyz_a[:, valid_a].T[ia] @ rt[:3, :3].T + rt[:3, 3]
    matched = xyz_b[:, valid_b].T[ib]
    K_b = torch.as_tensor(geo.target()[1], dtype=torch.float32)

    def project(x: torch.Tensor) -> torch.Tensor:
        uvw = x @ K_b.T
        return uvw[:, :2] / uvw[:, 2:].clamp_min(1e-9)

    err_px = (project(a_in_b) - project(matched)).norm(dim=1) / max(size_b)
    return Probe3DResult((a_in_b - matched).norm(dim=1), err_px, geo.angle, geo.step, geo.unit)


def probe3d_metrics(results: Sequence[Probe3DResult], prefix: str = "corr_geo",
                    thresholds: Sequence[float] = (0.01, 0.05, 0.10)) -> tuple[dict, dict]:
    """Metrics and config of the Probe3D protocol, matches pooled over pairs: ``<prefix>_recall`` (3-D recall
    at `PROBE3D_HEADLINE_STEP` steps), ``_recall_3d_<k>`` (k in `STEPS_3D`), ``_recall_px_<t>`` (2-D, fraction
    of B's longer side) and ``_recall_angle_<lo>_<hi>`` (the headline recall of each pair, averaged over the
    pairs of each half-open angle bin; empty bins left out)."""
    err = torch.cat([r.err_3d.double() / r.step for r in results])
    rec3 = recall_at(err, STEPS_3D)
    metrics = {f"{prefix}_recall": recall_at(err, (PROBE3D_HEADLINE_STEP,))[PROBE3D_HEADLINE_STEP],
               **{f"{prefix}_recall_3d_{s}": v for s, v in rec3.items()},
               **{f"{prefix}_recall_px_{threshold_tag(t)}": v
                  for t, v in recall_at(torch.cat([r.err_px for r in results]), thresholds).items()}}
    per_pair = torch.tensor([(r.err_3d.double() / r.step < PROBE3D_HEADLINE_STEP).double().mean().item()
                             for r in results])
    angles = torch.tensor([r.angle for r in results], dtype=torch.float64)
    metrics |= {f"{prefix}_recall_angle_{lo:g}_{hi:g}": v
                for (lo, hi), v in binned_recall(per_pair, angles, ANGLE_BINS, closed=False).items()}
    unit = results[0].unit
    config = {"protocol": f"{PROBE3D} (Probe3D's NAVI evaluation: every valid pixel on a point grid of "
                          f"{PROBE3D_GRID_FACTOR:g} x the image side (at most {PROBE3D_MAX_GRID}), bicubic "
                          f"features, the {PROBE3D_MATCHES} best matches by 1 - d1/d2 per pair)",
              "headline": f"3-D recall at {PROBE3D_HEADLINE_STEP} {unit}",
              "thresholds_3d": f"{', '.join(map(str, STEPS_3D))} {unit}",
              "thresholds_px": "fraction of the target image's longer side",
              "angle_bins": "-".join(f"{a:g}" for a in ANGLE_BINS) + " deg, half-open, mean of per-pair "
                            "headline recall"}
    return metrics, config


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
