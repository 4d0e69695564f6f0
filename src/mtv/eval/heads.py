"""The model's own MTV heads, evaluated zero-shot: relative depth (AbsRel and δ1 after a scale-and-shift fit)
and phrase grounding (acc@IoU 0.5). Plain SigLIP checkpoints have no heads; the suite reports them not run."""

from __future__ import annotations

from typing import Sequence

import torch

from mtv.eval.depth_probe import DepthProtocol
from mtv.eval.metrics import align_inverse_depth, box_iou, depth_errors, mean_of


@torch.no_grad()
def eval_depth_head(head, layers: Sequence[torch.Tensor], grid: tuple[int, int], targets: Sequence[torch.Tensor],
                    protocol: DepthProtocol, batch_size: int = 32) -> tuple[dict[str, float], int]:
    """``layers``: per image, the head's layers stacked (L, T, D). The head predicts relative inverse depth; scale
    and shift are fitted to the truth's inverse on valid pixels (MiDaS protocol), then inverted to depth.
    Returns per-image-averaged AbsRel and δ1 and the count of images with no valid pixel. Images whose maps share
    a size go through the head together: per-image calls of a conv head cost far more on CPUs."""
    by_size: dict[tuple[int, int], list[int]] = {}
    for i, target in enumerate(targets):
        by_size.setdefault(tuple(target.shape), []).append(i)
    scores, skipped = [], 0
    for size, idx in by_size.items():
        for start in range(0, len(idx), batch_size):
            chunk = idx[start:start + batch_size]
            x = torch.stack([layers[i] for i in chunk]).float()
            inv = head.predict(list(x.unbind(1)), grid, size)[:, 0]
            for pred, i in zip(inv, chunk):
                valid = protocol.mask(targets[i])
                if not valid.any():
                    skipped += 1
                    continue
                errors = depth_errors(align_inverse_depth(pred, targets[i], valid, protocol.max_depth),
                                      targets[i], valid)
                scores.append({"absrel": errors["absrel"], "delta1": errors["delta1"]})
    return mean_of(scores), skipped


@torch.no_grad()
def eval_grounding(head, tokens: Sequence[torch.Tensor], grid: tuple[int, int],
                   phrases: Sequence[Sequence[tuple[str, list[float]]]], sizes: Sequence[tuple[int, int]],
                   phrase_emb: dict[str, torch.Tensor]) -> tuple[float, int]:
    """Fraction of (phrase, box) queries whose predicted box has IoU >= 0.5 with the truth, and their number.
    Boxes are compared in normalised image coordinates, so image size and aspect ratio do not matter."""
    hits, total = 0, 0
    for x, queries, (h, w) in zip(tokens, phrases, sizes):
        if not queries:
            continue
        emb = torch.stack([phrase_emb[p] for p, _ in queries])
        pred = head.predict_boxes(x.float(), grid, emb.to(x.device)).cpu()
        truth = torch.tensor([b for _, b in queries], dtype=torch.float32) / torch.tensor([w, h, w, h])
        hits += int((box_iou(pred, truth) >= 0.5).sum())
        total += len(queries)
    return (hits / total if total else 0.0), total
