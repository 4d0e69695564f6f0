"""BEiT-style block masks on the patch grid for iBOT: rectangles rather than scattered patches, so a masked
patch cannot be guessed from its immediate neighbours."""

from __future__ import annotations

import math

import numpy as np
import torch

Block = tuple[slice, slice]


def random_block(grid: tuple[int, int], min_area: int, max_area: int, rng: np.random.Generator,
                 min_aspect: float = 0.3) -> Block | None:
    """One draw of a rectangle: area uniform, aspect (rows / columns) log-uniform in [min_aspect, 1/min_aspect].
    Returns (row slice, column slice), or None when the rounded rectangle breaks a bound or leaves the grid."""
    rows, cols = grid
    area = rng.uniform(min_area, max_area)
    aspect = math.exp(rng.uniform(math.log(min_aspect), -math.log(min_aspect)))
    h, w = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
    if not (min_area <= h * w <= max_area and min_aspect <= h / max(w, 1) <= 1 / min_aspect
            and 0 < h <= rows and 0 < w <= cols):
        return None
    top, left = int(rng.integers(0, rows - h + 1)), int(rng.integers(0, cols - w + 1))
    return slice(top, top + h), slice(left, left + w)


def block_mask(grid: tuple[int, int], n_masked: int, rng: np.random.Generator, min_patches: int = 4,
               min_aspect: float = 0.3, patience: int = 10) -> np.ndarray:
    """(rows, cols) bool mask with at most ``n_masked`` patches, as a union of blocks of >= ``min_patches``.

    Blocks are drawn no larger than the remaining budget, so the target is never exceeded; drawing stops after
    ``patience`` draws in a row that add nothing (BEiT), so small grids or targets below ``min_patches`` may
    fall short of the target."""
    mask = np.zeros(grid, dtype=bool)
    misses = 0
    while misses < patience and (budget := n_masked - int(mask.sum())) >= min_patches:
        block = random_block(grid, min_patches, budget, rng, min_aspect)
        if block is None or mask[block].all():
            misses += 1
            continue
        mask[block] = True
        misses = 0
    return mask


def stratified_ratios(n: int, low: float, high: float, rng: np.random.Generator) -> np.ndarray:
    """One ratio per stratum of [low, high] cut in n equal parts: a batch always spans light to heavy masking."""
    edges = np.linspace(low, high, n + 1)
    return rng.uniform(edges[:-1], edges[1:])


def batch_masks(batch: int, grid: tuple[int, int], probability: float, rng: np.random.Generator,
                ratio_min: float = 0.1, ratio_max: float = 0.5, min_patches: int = 4,
                min_aspect: float = 0.3) -> torch.Tensor:
    """(batch, rows*cols) bool, True = masked. A fraction ``probability`` of the images (rounded stochastically,
    so a batch of 1 is masked with that probability) get block masks whose target ratios are stratified over
    [ratio_min, ratio_max]; the others stay all-False. Which images are masked is random."""
    n = min(batch, int(batch * probability + rng.random()))
    masks = np.zeros((batch, grid[0] * grid[1]), dtype=bool)
    ratios = stratified_ratios(n, ratio_min, ratio_max, rng)
    for i, ratio in zip(rng.permutation(batch)[:n], ratios):
        masks[i] = block_mask(grid, round(ratio * masks.shape[1]), rng, min_patches, min_aspect).ravel()
    return torch.from_numpy(masks)
