"""Depth heads: relative inverse depth from intermediate layers of the ViT. `DepthHead`, a light DPT (Ranftl et
al., 2021) on four layers, or `LinearDepthHead`, one linear map per token, which leaves the spatial reasoning to
the tower."""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def depth_layers(num_layers: int) -> list[int]:
    """Four evenly spaced 0-based layer indices ending at the last: 12 -> [2, 5, 8, 11], 24 -> [5, 11, 17, 23]
    (DPT's hooks). Towers shallower than 4 layers repeat indices."""
    if num_layers < 1:
        raise ValueError(f"depth_layers: num_layers must be >= 1, got {num_layers}")
    return [math.ceil((k + 1) * num_layers / 4) - 1 for k in range(4)]


class _Residual(nn.Module):
    """DPT's residual conv unit: refines a level without changing its size."""

    def __init__(self, width: int):
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class _Fuse(nn.Module):
    """Adds a refined skip level to the coarser path, refines the sum and upsamples it to the next level's size."""

    def __init__(self, width: int, has_skip: bool = True):
        super().__init__()
        # the coarsest level has no skip; building none keeps every parameter used (DDP requires it)
        self.skip = _Residual(width) if has_skip else None
        self.refine = _Residual(width)
        self.out = nn.Conv2d(width, width, 1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None, size: tuple[int, int]) -> torch.Tensor:
        if self.skip is not None:
            x = x + self.skip(skip)
        x = F.interpolate(self.refine(x), size=size, mode="bilinear", align_corners=False)
        return self.out(x)


def _resampler(width: int, factor: float) -> nn.Module:
    """Moves a level from the patch grid to ``factor`` x its resolution: 4 and 2 up, 1 same, 0.5 down."""
    if factor > 1:
        f = int(factor)
        return nn.ConvTranspose2d(width, width, f, stride=f)
    if factor == 1:
        return nn.Identity()
    return nn.Conv2d(width, width, 3, stride=2, padding=1)


class DepthHead(nn.Module):
    """Reassembles 4 token layers into a pyramid at 4x, 2x, 1x and 1/2x the patch grid (strides 4, 8, 16, 32 px
    for 16-px patches), fuses it top-down, and upsamples to the input size.

    Sizes follow the actual grid rather than assuming powers of two, so any grid works (an 8x8 grid has a 4x4
    top level; a 1x1 grid stays 1x1). A per-level LayerNorm tames the unnormalised residual stream of
    intermediate layers. Softplus keeps inverse depth non-negative without the dead gradients of a ReLU."""

    factors = (4.0, 2.0, 1.0, 0.5)

    def __init__(self, dim: int, width: int = 64):
        super().__init__()
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in self.factors)
        self.project = nn.ModuleList(nn.Conv2d(dim, width, 1) for _ in self.factors)
        self.resample = nn.ModuleList(_resampler(width, f) for f in self.factors)
        self.lateral = nn.ModuleList(nn.Conv2d(width, width, 3, padding=1, bias=False) for _ in self.factors)
        self.fuse = nn.ModuleList(_Fuse(width, has_skip=i > 0) for i in range(len(self.factors)))
        half = max(width // 2, 1)
        self.neck = nn.Conv2d(width, half, 3, padding=1)
        self.out = nn.Sequential(nn.Conv2d(half, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 1, 1))

    def forward(self, layers: Sequence[torch.Tensor], grid: tuple[int, int],
                image_size: tuple[int, int]) -> torch.Tensor:
        """``layers``: 4 tensors (B, N, D) on the ``grid = (rows, cols)`` patch grid; ``image_size = (H, W)``.
        Returns (B, 1, H, W) relative inverse depth."""
        if len(layers) != len(self.factors):
            raise ValueError(f"DepthHead reads {len(self.factors)} layers, got {len(layers)}")
        h, w = grid
        levels = []
        for x, norm, proj, resample, lateral in zip(layers, self.norms, self.project, self.resample, self.lateral):
            x = norm(x).transpose(1, 2).reshape(x.shape[0], -1, h, w)
            levels.append(lateral(resample(proj(x))))
        # top-down: start from the coarsest level, each fusion ends at the next finer level's size
        sizes = [lvl.shape[-2:] for lvl in levels[:3]][::-1] + [levels[0].shape[-2:]]
        x = self.fuse[0](levels[3], None, sizes[0])
        for fuse, skip, size in zip(self.fuse[1:], levels[2::-1], sizes[1:]):
            x = fuse(x, skip, size)
        x = F.interpolate(self.neck(x), size=tuple(image_size), mode="bilinear", align_corners=False)
        return F.softplus(self.out(x))


class LinearDepthHead(nn.Module):
    """Per-layer LayerNorm, concatenation and one linear map per token, upsampled bilinearly. With no
    convolution, the depth of a patch must be legible in its own tokens, as it must be for a probe; a DPT can
    instead build it from the context of many tokens (docs/DIAGNOSIS.md, round 5)."""

    def __init__(self, dim: int, layers: int = 4):
        super().__init__()
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(layers))
        self.out = nn.Conv2d(dim * layers, 1, 1)

    def forward(self, layers: Sequence[torch.Tensor], grid: tuple[int, int],
                image_size: tuple[int, int]) -> torch.Tensor:
        if len(layers) != len(self.norms):
            raise ValueError(f"LinearDepthHead reads {len(self.norms)} layers, got {len(layers)}")
        x = torch.cat([norm(x) for x, norm in zip(layers, self.norms)], -1)
        x = x.transpose(1, 2).reshape(x.shape[0], -1, *grid)
        x = F.interpolate(self.out(x), size=tuple(image_size), mode="bilinear", align_corners=False)
        return F.softplus(x)
