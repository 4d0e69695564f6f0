"""Image-free reference points for the dense probes: what a prediction that never looks at the test image scores,
with the probe's own metric on the probe's own data. A probe's value minus its prior is what the image features
earn; a probe at its prior reads position, not content.

- segmentation: the majority class of each pixel position over the training maps;
- depth: the mean training depth of each pixel row (a ground plane seen from an orbiting camera is mostly that);
- geometric and semantic correspondence: the identity match, each point predicted at the same relative position
  in the other image (a floor for the geometric probe: with views 10–40° apart it beat every encoder).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from mtv.eval.correspondence import Pair, threshold_tag
from mtv.eval.depth_probe import DepthProtocol, score_depth_maps
from mtv.eval.keypoints import Convention, hits, pck_metrics, scored_points
from mtv.eval.metrics import IGNORE, recall_at, seg_areas, seg_scores

PRIOR_SIDE = 128  # the per-pixel class prior is counted on a grid at most this many pixels on a side


def _scale_points(pts: np.ndarray, size_a: tuple[int, int], size_b: tuple[int, int]) -> torch.Tensor:
    (ha, wa), (hb, wb) = size_a, size_b
    return torch.as_tensor(pts, dtype=torch.float64) * torch.tensor([wb / wa, hb / ha], dtype=torch.float64)


def seg_prior(train_maps: Sequence[torch.Tensor], test_maps: Sequence[torch.Tensor], num_classes: int) -> dict:
    """mIoU and pixel accuracy of predicting, at every pixel, the class seen most often there in training."""
    h, w = train_maps[0].shape
    scale = min(1.0, PRIOR_SIDE / max(h, w))  # a 150-class real benchmark stays a few MB
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    counts = torch.zeros(num_classes, *size, dtype=torch.int32)
    for m in train_maps:
        m = F.interpolate(m[None, None].float(), size=size, mode="nearest")[0, 0].long()
        keep = m != IGNORE
        counts.view(num_classes, -1)[m[keep], keep.flatten().nonzero()[:, 0]] += 1
    majority = counts.argmax(0)
    areas = torch.zeros(4, num_classes, dtype=torch.long)
    for y in test_maps:
        pred = F.interpolate(majority[None, None].float(), size=tuple(y.shape), mode="nearest")[0, 0].long()
        areas += seg_areas(pred, y.long(), num_classes)
    scores = seg_scores(areas)
    return {"seg_miou": scores["miou"], "seg_pixel_acc": scores["pixel_acc"]}


def depth_prior(train_maps: Sequence[torch.Tensor], test_maps: Sequence[torch.Tensor],
                protocol: DepthProtocol) -> dict:
    """The depth probe's metrics for predicting each pixel's depth as the mean valid training depth of its row
    (rows with no valid training pixel take the overall mean)."""
    h = train_maps[0].shape[0]
    total, count = torch.zeros(h, dtype=torch.float64), torch.zeros(h, dtype=torch.float64)
    for m in train_maps:
        m = F.interpolate(m[None, None].float(), size=(h, m.shape[1]), mode="nearest")[0, 0].double()
        valid = protocol.mask(m)
        total += torch.where(valid, m, 0).sum(1)
        count += valid.sum(1)
    overall = total.sum() / count.sum().clamp_min(1)
    profile = torch.where(count > 0, total / count.clamp_min(1), overall)
    preds = []
    for y in test_maps:
        rows = F.interpolate(profile[None, None].float(), size=y.shape[0], mode="linear", align_corners=False)[0, 0]
        preds.append(rows[:, None].expand(-1, y.shape[1]).clamp_min(protocol.min_depth))
    scores, _ = score_depth_maps(preds, test_maps, protocol)
    return {f"depth_{k}": v for k, v in scores.items()}


def geo_prior(pairs: Sequence[Pair], sizes_a: Sequence[tuple[int, int]], sizes_b: Sequence[tuple[int, int]],
              thresholds: Sequence[float], headline: float) -> dict:
    """The geometric probe's plain pixel recalls (no ratio test) for the identity match."""
    errors = torch.cat([(_scale_points(p.pts_a, sa, sb) - torch.as_tensor(p.pts_b, dtype=torch.float64)).norm(dim=1)
                        / max(sb) for p, sa, sb in zip(pairs, sizes_a, sizes_b)])
    rec = recall_at(errors, thresholds)
    return {"corr_geo_recall": rec[headline], **{f"corr_geo_recall_{threshold_tag(t)}": v for t, v in rec.items()}}


def sem_prior(pairs: Sequence[Pair], sizes_a: Sequence[tuple[int, int]], sizes_b: Sequence[tuple[int, int]],
              alpha: float, convention: Convention = "centre") -> dict:
    """PCK of the identity match, under the semantic probe's convention and averaging (`mtv.eval.keypoints`)."""
    per_pair = [hits(_scale_points(p.pts_a, sa, sb).numpy(), scored_points(p.pts_b, sb, convention), p.bbox, alpha,
                     convention)
                for p, sa, sb in zip(pairs, sizes_a, sizes_b)]
    return pck_metrics(per_pair, [p.category for p in pairs], [p.viewpoint for p in pairs])[0]
