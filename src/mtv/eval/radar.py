"""``mtv report RUN_DIR [RUN_DIR ...]``: several runs' ``report.json`` side by side — a radar plot in the style of
the paper's Figure 1 (one filled polygon per run, or for `mtv ablate`'s seeds a mean ± std band; each axis scaled
to the runs' own range with the best value outermost, values written along the axes in the run's colour) and a
markdown table."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from mtv import stats
from mtv.atomic import atomic_path, write_text
from mtv.errors import MTVError, writable_dir
from mtv.eval.report import LOWER_IS_BETTER, REFERENCE_TITLES, format_metric

# metric key -> axis label (benchmark on the first line, task on the second), in the paper's order
AXES = {
    "zeroshot_top1": "zero-shot\nclassification",
    "retrieval_i2t_r1": "I→T\nretrieval",
    "grounding_acc50": "phrase\ngrounding",
    "seg_miou": "semantic seg.\n(mIoU)",
    "corr_geo_recall": "geometric\ncorr.",
    "corr_sem_pck": "semantic\ncorr.",
    "depth_rmse": "mono. depth\n(RMSE)",
    "depth_head_absrel": "zero-shot depth\n(AbsRel)",
}
COLOURS = ["#5cb87a", "#4a8fe7", "#ff7f0e", "#d14d4d", "#9467bd", "#8c564b"]


def load_reports(run_dirs: list[str]) -> list[tuple[str, dict]]:
    """(name, report) per directory; the name is the directory's, or its last two parts where two runs share
    one (``runs/a/eval``, ``runs/b/eval``)."""
    reports = []
    for d in run_dirs:
        path = Path(d) / "report.json"
        if not path.exists():
            raise MTVError(f"{path}: not found; pass run directories written by mtv eval")
        try:
            report = json.loads(path.read_text())
            report["metrics"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise MTVError(f"{path}: not an mtv eval report ({type(e).__name__})") from None
        reports.append((Path(d).resolve(), report))
    names = [p.name for p, _ in reports]
    return [(p.name if names.count(p.name) == 1 else f"{p.parent.name}/{p.name}", r) for p, r in reports]


def reference_level(reports: list[dict], key: str) -> dict:
    """A reference level the reports carry (``metrics_floor``, ``metrics_prior``): one value per metric, the mean
    over reports only where they differ (each seed's floor has its own init and probe seed)."""
    values: dict[str, list[float]] = {}
    for report in reports:
        for k, v in report.get(key, {}).items():
            values.setdefault(k, []).append(v)
    return {k: vs[0] if len(set(vs)) == 1 else stats.mean(vs) for k, vs in values.items()}


def _axis_scale(values: list[float], lower_better: bool) -> Callable[[float], float]:
    """Radius in [0.35, 1] over ``values``' range: the worst sits inside, the best on the rim, so small gaps stay
    visible. ``values`` holds everything drawn on the axis (means, band edges, floor) so none falls off it."""
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    return lambda v: 0.35 + 0.65 * ((hi - v) if lower_better else (v - lo)) / span


def _spreads(spreads: list[dict | None] | None, n: int) -> list[dict]:
    """One metric -> std dict per run; a missing run or std (a single seed has none) counts as no spread."""
    return [{k: v for k, v in (s or {}).items() if v is not None} for s in spreads or [None] * n]


def _drawn(k: str, runs: list[tuple[str, dict]], spreads: list[dict], floor: dict) -> list[float]:
    """Every value drawn on axis ``k``: each run's mean ± std, and the floor."""
    return [v for (_, m), s in zip(runs, spreads) for v in (m[k] - s.get(k, 0), m[k] + s.get(k, 0))] \
        + ([floor[k]] if k in floor else [])


def _closed(angles, radii):
    """The polygon's vertices with the first repeated at the end, so the outline closes."""
    import numpy as np

    return np.append(angles, angles[0]), np.append(radii, radii[0])


def radar(runs: list[tuple[str, dict]], path: str | os.PathLike, spreads: list[dict | None] | None = None,
          floor: dict | None = None) -> list[str]:
    """Writes the radar PNG over the axes every run reports; returns those metric keys.

    ``spreads`` (one dict of metric -> std per run, or ``None``) shades mean ± std around each run's polygon, so
    gaps within seed noise look like it; ``floor`` (metric -> value of an untrained encoder) adds a dashed grey
    polygon, the level training has to beat."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    keys = [k for k in AXES if all(k in m for _, m in runs)]
    if len(keys) < 3:
        raise MTVError(f"the runs share {len(keys)} radar metric(s) ({', '.join(keys) or 'none'}); a radar needs 3")
    spreads, floor = _spreads(spreads, len(runs)), floor or {}
    scales = {k: _axis_scale(_drawn(k, runs, spreads, floor), k.endswith(LOWER_IS_BETTER)) for k in keys}
    angles = np.arange(len(keys)) * 2 * np.pi / len(keys)
    fig = plt.figure(figsize=(8, 8))
    ax = fig.add_subplot(polar=True)
    ax.set_theta_offset(np.pi / 2)  # first axis at the top, then clockwise
    ax.set_theta_direction(-1)
    ax.set_ylim(0, 1.05)
    ax.set_yticks([0.2, 0.4, 0.6, 0.8, 1.0])
    ax.set_yticklabels([])
    ax.set_xticks(angles)
    ax.set_xticklabels([AXES[k] for k in keys], fontsize=13, color="#444")
    ax.tick_params(axis="x", pad=22)
    ax.grid(color="#bbb")
    if floor:  # NaN where the floor lacks an axis: the outline breaks there instead of inventing a value
        ax.plot(*_closed(angles, [scales[k](floor[k]) if k in floor else np.nan for k in keys]), color="#888",
                linestyle="--", linewidth=2, label="untrained floor")
    for (name, metrics), spread, colour in zip(runs, spreads, COLOURS * 4):
        r = [scales[k](metrics[k]) for k in keys]
        closed_a, closed_r = _closed(angles, r)
        ax.plot(closed_a, closed_r, color=colour, linewidth=3, label=name)
        if spread:
            edges = [_closed(angles, [scales[k](metrics[k] + sign * spread.get(k, 0)) for k in keys])[1]
                     for sign in (-1, 1)]
            ax.fill_between(closed_a, *edges, color=colour, alpha=0.2, linewidth=0)
        else:
            ax.fill(closed_a, closed_r, color=colour, alpha=0.12)
        for a, rad, k in zip(angles, r, keys):
            ax.text(a, rad + 0.06, format_metric(k, metrics[k]).rstrip("%"), color=colour, fontsize=10,
                    ha="center", va="center")
    # below the plot, never over an axis label
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=min(3, len(runs) + bool(floor)), fontsize=12,
              frameon=False)
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=150, format="png")
    finally:
        plt.close(fig)
    return keys


def table(runs: list[tuple[str, dict]], spreads: list[dict | None] | None = None) -> str:
    """Every metric any run reports, one column per run; — where a run lacks it. With ``spreads`` (metric -> std
    per run, or ``None``) a cell reads "mean ± std", so a difference can be judged against the noise."""
    keys = list(dict.fromkeys(k for _, m in runs for k in m))
    spreads = _spreads(spreads, len(runs))

    def cell(k: str, m: dict, s: dict) -> str:
        if k not in m:
            return "—"
        return format_metric(k, m[k]) + (f" ± {format_metric(k, s[k])}" if k in s else "")

    lines = ["| metric | " + " | ".join(n for n, _ in runs) + " |", "|---|" + "---:|" * len(runs)]
    lines += [f"| {k} | " + " | ".join(cell(k, m, s) for (_, m), s in zip(runs, spreads)) + " |" for k in keys]
    return "\n".join(lines) + "\n"


def compare(run_dirs: list[str], out: str | os.PathLike) -> dict:
    """``compare.md`` in ``out``, with the runs' untrained floor and image-free prior as extra columns, and
    ``radar.png`` when the runs share at least 3 radar metrics (``radar`` is None otherwise)."""
    named = load_reports(run_dirs)
    runs = [(name, report["metrics"]) for name, report in named]
    reports = [report for _, report in named]
    floor = reference_level(reports, "metrics_floor")
    refs = [(title, ref) for field, title in REFERENCE_TITLES.items() if (ref := reference_level(reports, field))]
    out = writable_dir(out, "comparison", "--out")
    write_text(out / "compare.md", "# Runs side by side\n\n" + table(runs + refs))
    shared = [k for k in AXES if all(k in m for _, m in runs)]
    keys = radar(runs, out / "radar.png", floor=floor) if len(shared) >= 3 else []
    return {"radar": str(out / "radar.png") if keys else None, "table": str(out / "compare.md"), "axes": keys}
