"""Seed statistics for comparing runs: a mean over a few seeds means little without the spread it came with,
and a difference between two runs is only worth reading when it stands out of that spread.

Pure functions over plain sequences of floats; intervals are Student-t, the right width for the 2–10 seeds an
ablation can afford (a normal interval would be too narrow there). Below two values there is no spread to
estimate, so std and intervals are ``None`` rather than a misleading 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats


def mean(values: Sequence[float]) -> float:
    return float(np.mean(values))


def std(values: Sequence[float]) -> float | None:
    """Sample standard deviation (ddof=1): the seed-to-seed spread, not the spread of these particular values."""
    return float(np.std(values, ddof=1)) if len(values) >= 2 else None


def ci95(values: Sequence[float]) -> list[float] | None:
    """95% Student-t interval of the mean: mean ± t(0.975, n-1) · std / sqrt(n)."""
    if len(values) < 2:
        return None
    m, half = mean(values), float(stats.t.ppf(0.975, len(values) - 1)) * std(values) / math.sqrt(len(values))
    return [m - half, m + half]


def summarize(values: Sequence[float]) -> dict:
    """``{mean, std, ci95, n}`` of one metric over seeds."""
    return {"mean": mean(values), "std": std(values), "ci95": ci95(values), "n": len(values)}


def paired(new: Sequence[float], old: Sequence[float], lower_is_better: bool = False) -> dict:
    """Compares two runs seed by seed (``new[i]`` and ``old[i]`` share a seed, so shared seed luck cancels).

    ``diff_mean`` is new − old whatever the metric; ``significant`` when the 95% interval of the per-seed
    differences excludes 0; ``better`` (only when significant, else ``None``) says whether new improves on old,
    which for a lower-is-better metric is a negative difference."""
    if len(new) != len(old) or not new:
        raise ValueError(f"paired comparison needs the same seeds on both sides ({len(new)} vs {len(old)} values)")
    diffs = [a - b for a, b in zip(new, old)]
    interval = ci95(diffs)
    significant = interval is not None and (interval[0] > 0 or interval[1] < 0)
    d = mean(diffs)
    better = ((d < 0) if lower_is_better else (d > 0)) if significant else None
    return {"diff_mean": d, "ci95": interval, "significant": significant, "better": better}
