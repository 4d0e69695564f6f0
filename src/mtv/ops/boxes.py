"""Box geometry in plain torch (no torchvision here): areas, IoU, generalised IoU, non-maximum suppression.

Boxes are ``(x0, y0, x1, y1)`` rows with ``x0 <= x1`` and ``y0 <= y1``, in any unit. Shared by pseudo-labelling
(NMS of detections) and grounding (GIoU loss of regressed boxes).
"""

from __future__ import annotations

import torch


def cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), dim=-1)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)


def _inter_union(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    top_left = torch.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(-1)
    return inter, box_area(a)[:, None] + box_area(b)[None, :] - inter


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, M) IoU of every box of ``a`` (N, 4) with every box of ``b`` (M, 4); 0 where both are empty."""
    inter, union = _inter_union(a, b)
    return inter / union.clamp(min=torch.finfo(union.dtype).tiny)


def generalized_box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, M) GIoU = IoU − (hull − union) / hull, in [−1, 1]; ``1 − giou`` is the usual box loss (DETR, CLOC)."""
    inter, union = _inter_union(a, b)
    iou = inter / union.clamp(min=torch.finfo(union.dtype).tiny)
    hull = (torch.maximum(a[:, None, 2:], b[None, :, 2:]) - torch.minimum(a[:, None, :2], b[None, :, :2])).prod(-1)
    return iou - (hull - union) / hull.clamp(min=torch.finfo(hull.dtype).tiny)


def paired(op, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``op(a[i], b[i])`` for each row i of (N, 4) ``a`` and ``b``: a pairwise box op (`box_iou`,
    `generalized_box_iou`) mapped over pairs, O(N) instead of the N x N matrix whose diagonal it is."""
    return torch.vmap(lambda x, y: op(x[None], y[None])[0, 0])(a, b)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Indices of the boxes greedy NMS keeps, best score first: a box is dropped when its IoU with a kept,
    higher-scoring box exceeds ``iou_threshold``. Ties keep the earlier box (stable sort)."""
    order = torch.sort(scores, descending=True, stable=True).indices
    # The greedy pass is sequential: run it on the CPU over a precomputed matrix (N is small after thresholding).
    iou = box_iou(boxes[order], boxes[order]).cpu()
    keep = torch.ones(len(order), dtype=torch.bool)
    for i in range(len(order)):
        if keep[i]:
            keep[i + 1:] &= iou[i, i + 1:] <= iou_threshold
    return order[keep.to(order.device)]


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """NMS within each group (e.g. each query phrase): boxes of different groups never suppress each other."""
    if len(boxes) == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    # Shift each group into its own disjoint region of the plane, as torchvision does.
    span = (boxes.max() - boxes.min()) + 1
    offsets = groups.to(boxes.dtype)[:, None] * span
    return nms(boxes + offsets, scores, iou_threshold)
