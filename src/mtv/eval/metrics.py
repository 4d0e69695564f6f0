"""Metrics of the dense probes as pure functions on tensors, so each is testable against hand-computed cases.

Conventions: segmentation labels use ``IGNORE`` (-1) for unlabelled pixels; depth maps use NaN (or any value
outside the valid range) for invalid pixels; points are (x, y) in pixel-edge coordinates.
"""

from __future__ import annotations

from typing import Sequence

import torch

from mtv.ops.boxes import box_iou as pairwise_iou, paired

IGNORE = -1


def seg_areas(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(4, C) pixel counts per class, as mmsegmentation's ``IoUMetric.intersect_and_union``: intersection, union,
    prediction and truth over the pixels whose target is not ``IGNORE``. A kept pixel whose target is outside
    [0, C) still counts under its predicted class, as mmseg's histogram of the masked prediction does."""
    keep = target != IGNORE
    p, t = pred[keep].long(), target[keep].long()

    def hist(x: torch.Tensor) -> torch.Tensor:
        x = x[(x >= 0) & (x < num_classes)]
        return torch.bincount(x, minlength=num_classes)

    inter, area_pred, area_label = hist(p[p == t]), hist(p), hist(t)
    return torch.stack([inter, area_pred + area_label - inter, area_pred, area_label])


def seg_scores(areas: torch.Tensor) -> dict:
    """mmseg's ``total_area_to_metrics`` of areas summed over the test set: per-class IoU (NaN for a class in
    neither truth nor prediction), ``miou`` their NaN-mean (NaN when no class has pixels), ``pixel_acc`` (aAcc)."""
    inter, union, _, label = areas.double()
    iou = inter / union  # 0 / 0 = NaN: the class is left out of the mean
    return {"miou": iou.nanmean().item(), "pixel_acc": (inter.sum() / label.sum()).item(),
            "per_class_iou": [None if v != v else v for v in iou.tolist()]}


def valid_depth(target: torch.Tensor, min_depth: float, max_depth: float) -> torch.Tensor:
    """Pixels with a finite truth inside the benchmark's range; everything else is ignored, never an error."""
    return torch.isfinite(target) & (target > min_depth) & (target < max_depth)


def depth_errors(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> dict[str, float] | None:
    """RMSE, AbsRel and δ1-3 of one image over ``valid`` pixels; None when it has none (the caller counts it).
    ``pred`` must be positive where valid."""
    p, t = pred[valid].double(), target[valid].double()
    if t.numel() == 0:
        return None
    ratio = torch.maximum(p / t, t / p)
    return {"rmse": (p - t).pow(2).mean().sqrt().item(), "absrel": ((p - t).abs() / t).mean().item(),
            **{f"delta{k}": (ratio < 1.25 ** k).double().mean().item() for k in (1, 2, 3)}}


def scale_shift_fit(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> tuple[float, float]:
    """Least-squares ``s, t`` minimising ||s * pred + t - target||² over ``valid`` pixels."""
    p, t = pred[valid].double(), target[valid].double()
    a = torch.stack([p, torch.ones_like(p)], 1)
    sol = torch.linalg.lstsq(a, t[:, None]).solution[:, 0]
    return sol[0].item(), sol[1].item()


def align_inverse_depth(pred_inv: torch.Tensor, target: torch.Tensor, valid: torch.Tensor,
                        max_depth: float) -> torch.Tensor:
    """Metric depth from a relative inverse depth (MiDaS protocol): fit scale and shift to the truth's inverse
    on valid pixels, then invert; the aligned inverse is floored at 1 / ``max_depth`` so depth stays finite."""
    s, t = scale_shift_fit(pred_inv, 1.0 / target.clamp_min(1e-8), valid)
    return 1.0 / (s * pred_inv + t).clamp_min(1.0 / max_depth)


def mean_of(per_image: Sequence[dict[str, float]]) -> dict[str, float]:
    """Per-image averaging, the convention of the NYUv2/KITTI literature."""
    return {k: sum(d[k] for d in per_image) / len(per_image) for k in per_image[0]} if per_image else {}


def recall_at(errors: torch.Tensor, thresholds: Sequence[float]) -> dict[float, float]:
    """Fraction of matches whose error is below each threshold; NaN errors (no prediction) count as misses."""
    e = errors.double()
    return {t: ((e < t).double().mean().item() if e.numel() else 0.0) for t in thresholds}


def pck(pred: torch.Tensor, target: torch.Tensor, bbox_size: torch.Tensor, alpha: float = 0.1,
        strict: bool = False) -> torch.Tensor:
    """Per-keypoint hit: error at most (``strict``: below, Probe3D's test) ``alpha`` × the target object's box
    size (max of width and height). pred, target: (K, 2); bbox_size: () or (K,)."""
    err = (pred - target).norm(dim=-1)
    return err < alpha * bbox_size if strict else err <= alpha * bbox_size


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise IoU of xyxy boxes (N, 4) and (N, 4); degenerate boxes have IoU 0."""
    return paired(pairwise_iou, a, b)


def box_accuracy(pred: torch.Tensor, target: torch.Tensor, iou: float = 0.5) -> float:
    """Fraction of phrases whose predicted box overlaps the truth with IoU >= ``iou`` (acc@0.5)."""
    return (box_iou(pred, target) >= iou).double().mean().item() if len(pred) else 0.0


def ratio_test(best: torch.Tensor, second: torch.Tensor, ratio: float) -> torch.Tensor:
    """Lowe's ratio test on cosine similarities of L2-normalised features: a match passes when its distance
    ``sqrt(2 - 2 s)`` to the best neighbour is below ``ratio`` × the distance to the second best (an ambiguous
    match, equally close to two places, fails)."""
    dist = lambda s: (2 - 2 * s.double()).clamp_min(0).sqrt()  # noqa: E731
    return dist(best) < ratio * dist(second)


def rotation_angle(rotation: torch.Tensor) -> float:
    """Angle in degrees of a 3x3 rotation (e.g. the relative rotation between two cameras)."""
    cos = ((torch.diagonal(rotation.double()).sum() - 1) / 2).clamp(-1, 1)
    return torch.rad2deg(torch.arccos(cos)).item()


def binned_recall(hits: torch.Tensor, values: torch.Tensor, edges: Sequence[float],
                  closed: bool = True) -> dict[tuple[float, float], float]:
    """Mean of ``hits`` (bool or fraction, one per match) per bin ``[edges[i], edges[i + 1])`` of ``values`` (one
    per match), the last bin closed unless ``closed`` is False (Probe3D's bins); values outside the edges are
    left out, and so are bins with no match."""
    out = {}
    for k, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        sel = (values >= lo) & ((values <= hi) if closed and k == len(edges) - 2 else (values < hi))
        if sel.any():
            out[(lo, hi)] = hits[sel].double().mean().item()
    return out


def effective_rank(x: torch.Tensor) -> float:
    """exp(entropy) of the normalised singular values of the centred rows (Roy & Vetterli, 2007): k for k equal
    directions, near 1 for collapsed features; says how many dimensions a representation actually uses."""
    s = torch.linalg.svdvals(x.double() - x.double().mean(0))
    if s.sum() <= 1e-12 * x.double().abs().max().clamp_min(1):
        return 0.0
    p = s / s.sum()
    p = p[p > 0]
    return torch.exp(-(p * p.log()).sum()).item()
