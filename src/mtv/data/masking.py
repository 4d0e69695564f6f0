"""BEiT-style block masks on the patch grid for iBOT, drawn as DINOv2's MaskingGenerator draws them: rectangles
rather than scattered patches, so a masked patch cannot be guessed from its immediate neighbours."""

from __future__ import annotations

import math

import numpy as np
import torch

Block = tuple[slice, slice]


def random_block(grid: tuple[int, int], min_area: float, max_area: float, rng: np.random.Generator,
                 min_aspect: float = 0.3) -> Block | None:
    """One draw of a rectangle as DINOv2's MaskingGenerator draws it: area uniform between ``min_area`` and
    ``max_area`` (either may be the larger), aspect (rows / columns) log-uniform in [min_aspect, 1/min_aspect],
    sides rounded, placed uniformly. Returns (row slice, column slice), or None when a side rounds to 0 or the
    block is not strictly smaller than the grid on both axes."""
    rows, cols = grid
    area = min_area + (max_area - min_area) * rng.random()  # numpy's uniform refuses max_area < min_area
    aspect = math.exp(rng.uniform(math.log(min_aspect), -math.log(min_aspect)))
    h, w = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
    if not (0 < h < rows and 0 < w < cols):
        return None
    top, left = int(rng.integers(0, rows - h + 1)), int(rng.integers(0, cols - w + 1))
    return slice(top, top + h), slice(left, left + w)


def block_mask(grid: tuple[int, int], n_masked: int, rng: np.random.Generator, min_patches: int = 4,
               min_aspect: float = 0.3, attempts: int = 10) -> np.ndarray:
    """(rows, cols) bool mask with at most ``n_masked`` patches, as a union of blocks (DINOv2's generator).

    Each block is drawn with an area up to the remaining budget (and at most half the grid); it may overlap the
    blocks before it and is kept when it adds between 1 and budget new patches, so the last few patches are
    filled by small blocks and the target is almost always reached. Drawing stops after ``attempts`` draws in a
    row that add nothing."""
    mask = np.zeros(grid, dtype=bool)
    cap = mask.size / 2
    while (budget := min(n_masked - int(mask.sum()), cap)) > 0:
        for _ in range(attempts):
            block = random_block(grid, min_patches, budget, rng, min_aspect)
            if block is not None and 0 < (~mask[block]).sum() <= budget:
                mask[block] = True
                break
        else:
            break
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


def max_masked_tokens(batch: int, patches: int, probability: float, ratio_max: float) -> int:
    """The most patches `batch_masks` can mask in one batch: ceil(batch x probability) images, each at most
    round(ratio_max x patches); the fixed number of slots the iBOT loss gathers masked tokens into."""
    return min(batch * patches, math.ceil(batch * probability) * round(ratio_max * patches))
