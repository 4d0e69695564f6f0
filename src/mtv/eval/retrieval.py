"""Image-text retrieval recall@k in both directions, many-to-many (COCO has 5 captions per image).

A query hits at k if *any* of its correct matches is in its top k. Ties: a correct match is in the top k only
if fewer than k *incorrect* candidates score at least as high as it (equal scores never earn credit), the same
rule as `mtv.eval.zeroshot`.
"""

from __future__ import annotations

from math import comb
from typing import Sequence

import torch


def match_matrix(image_to_texts: Sequence[Sequence[int]], num_texts: int) -> torch.Tensor:
    """Boolean (n_images, n_texts) ground truth from each image's list of caption indices."""
    gt = torch.zeros(len(image_to_texts), num_texts, dtype=torch.bool)
    for i, texts in enumerate(image_to_texts):
        gt[i, list(texts)] = True
    if not gt.any(1).all() or not gt.any(0).all():
        raise ValueError("every image needs at least one caption and every caption an image")
    return gt


def _recall(sim: torch.Tensor, gt: torch.Tensor, ks: Sequence[int]) -> dict[int, float]:
    """Rows are queries, columns candidates."""
    best = sim.masked_fill(~gt, float("-inf")).max(dim=1, keepdim=True).values
    wrong_ahead = ((sim >= best) & ~gt).sum(dim=1)
    return {k: (wrong_ahead < k).double().mean().item() for k in ks}


def retrieval_recall(sim: torch.Tensor, image_to_texts: Sequence[Sequence[int]],
                     ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """``{"i2t_r1", .., "t2i_r10"}`` from a similarity matrix (n_images, n_texts); higher is more similar."""
    gt = match_matrix(image_to_texts, sim.shape[1])
    i2t, t2i = _recall(sim, gt, ks), _recall(sim.T, gt.T, ks)
    return {**{f"i2t_r{k}": v for k, v in i2t.items()}, **{f"t2i_r{k}": v for k, v in t2i.items()}}


def retrieval_chance(image_to_texts: Sequence[Sequence[int]], num_texts: int,
                     ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Expected recall of a random ranking on the same keys: 1 - C(n - m, k) / C(n, k) per query with m matches."""
    gt = match_matrix(image_to_texts, num_texts)

    def expected(matches: torch.Tensor, n: int, k: int) -> float:
        k = min(k, n)
        return sum(1 - comb(n - m, k) / comb(n, k) for m in matches.tolist()) / len(matches)

    n_images, n_texts = gt.shape
    return {**{f"i2t_r{k}": expected(gt.sum(1), n_texts, k) for k in ks},
            **{f"t2i_r{k}": expected(gt.sum(0), n_images, k) for k in ks}}
