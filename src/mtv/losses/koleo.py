"""KoLeo regulariser (Sablayrolles et al., used by DINOv2): spreads features by pushing up each one's distance to
its nearest neighbour in the batch, a Kozachenko–Leonenko differential-entropy estimate."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def koleo_loss(features: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """-mean log(distance to nearest neighbour) of the L2-normalised (B, D) features, per rank, in fp32.

    The nearest neighbour is found by inner product, excluding the point itself. Distances are clamped at ``eps``
    so duplicate images give a large finite loss with finite gradients instead of inf; a batch below 2 has no
    neighbours and gives 0 (still attached to the graph, so DDP sees the parameters as used)."""
    x = F.normalize(features.float(), dim=-1, eps=eps)
    if x.shape[0] < 2:
        return x.sum() * 0.0
    with torch.no_grad(), torch.autocast(x.device.type, enabled=False):  # neighbours ranked in fp32
        sim = x @ x.T
        sim.fill_diagonal_(-2.0)  # below any cosine: never its own neighbour
        nearest = sim.argmax(dim=1)
    dist = (x - x[nearest]).pow(2).sum(-1).clamp_min(eps * eps).sqrt()
    return -dist.log().mean()
