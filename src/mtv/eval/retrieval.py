"""Image-text retrieval recall@k in both directions, as CLIP_benchmark's zero-shot retrieval computes it.

Every caption is its own text (COCO has 5 per image; two equal strings are two texts). Text retrieval (``i2t``)
ranks all texts for each image and hits at k when any of that image's captions is in its top k; image retrieval
(``t2i``) ranks all images for each text and hits when the text's image is in its top k. The top k is one
``torch.topk(k)`` per query and k, so equal scores are credited as ``torch.topk`` orders them; k is capped at the
number of candidates.
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
    out = {}
    for k in ks:
        top = sim.topk(min(k, sim.shape[1]), dim=1, largest=True, sorted=True).indices
        out[k] = gt.gather(1, top).any(dim=1).double().mean().item()
    return out


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
