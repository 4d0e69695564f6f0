"""DINO projection head: MLP -> bottleneck -> L2-normalise -> unit-norm prototypes. Training-only (not exported)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Prototypes(nn.Module):
    """Weight-normalised linear layer with the norm fixed to 1 (DINO's weight_norm with g frozen at 1).

    The stored weight is free; rows are normalised in every forward, so the effective prototypes stay unit-norm
    after any optimiser step and the logits are cosine similarities in [-1, 1]."""

    def __init__(self, dim: int, prototypes: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(prototypes, dim))
        nn.init.trunc_normal_(self.weight, std=0.02)

    @property
    def normalized_weight(self) -> torch.Tensor:
        return F.normalize(self.weight, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.normalized_weight.to(x.dtype))


class SSLHead(nn.Module):
    """(..., dim) tokens -> (..., prototypes) logits. DINOv2 sizes: hidden 2048, bottleneck 256, 65 536 prototypes;
    smaller ones suit tiny towers. ``layers`` counts the MLP's linear layers (3 in DINO)."""

    def __init__(self, dim: int, prototypes: int = 65536, hidden: int = 2048, bottleneck: int = 256, layers: int = 3):
        super().__init__()
        sizes = [dim] + [hidden] * (layers - 1) + [bottleneck]
        blocks: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            blocks.append(nn.Linear(a, b))
            if i < layers - 1:
                blocks.append(nn.GELU())
        self.mlp = nn.Sequential(*blocks)
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.prototypes = Prototypes(bottleneck, prototypes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prototypes(F.normalize(self.mlp(x), dim=-1))
