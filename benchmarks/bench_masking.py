"""How closely block masks reach their target: the mean masked fraction of an 8 x 8 grid at target ratios 0.1 and
0.3 (masked / target in brackets), for `mtv.data.masking.block_mask` and for DINOv2's MaskingGenerator as
described in its code (re-implemented here: blocks of area uniform in [min_patches, remaining budget], aspect
log-uniform in [0.3, 1/0.3], strictly smaller than the grid, accepted when they add 1..budget new patches even
if they overlap earlier ones; 10 draws per block; a block is at most half the grid).

    python benchmarks/bench_masking.py [--draws 20000]
"""

from __future__ import annotations

import argparse
import math
import random

import numpy as np

from mtv.data.masking import block_mask


def dinov2_block_mask(grid: tuple[int, int], n_masked: int, rnd: random.Random, min_patches: int = 4,
                      min_aspect: float = 0.3) -> np.ndarray:
    rows, cols = grid
    mask = np.zeros(grid, dtype=bool)
    cap = 0.5 * rows * cols
    while (count := int(mask.sum())) < n_masked:
        budget = min(n_masked - count, cap)
        added = 0
        for _ in range(10):
            area = rnd.uniform(min_patches, budget)
            aspect = math.exp(rnd.uniform(math.log(min_aspect), -math.log(min_aspect)))
            h, w = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
            if h < rows and w < cols:
                top, left = rnd.randint(0, rows - h), rnd.randint(0, cols - w)
                new = h * w - int(mask[top:top + h, left:left + w].sum())
                if 0 < new <= budget:
                    mask[top:top + h, left:left + w] = True
                    added = new
            if added:
                break
        if not added:
            break
    return mask


def mean_fraction(draw, draws: int) -> float:
    return float(np.mean([draw().mean() for _ in range(draws)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--draws", type=int, default=20000)
    args = parser.parse_args()
    grid, n = (8, 8), 64
    rng, rnd = np.random.default_rng(0), random.Random(0)
    for ratio in (0.1, 0.3):
        target = int(ratio * n)
        ours = mean_fraction(lambda: block_mask(grid, target, rng), args.draws)
        ref = mean_fraction(lambda: dinov2_block_mask(grid, target, rnd), args.draws)
        print(f"8x8 at {ratio:.0%} (target {target} patches): mtv {ours:.3%} ({ours * n / target:.1%} of target), "
              f"DINOv2 {ref:.3%} ({ref * n / target:.1%} of target)")


if __name__ == "__main__":
    main()
