"""``mtv report RUN_DIR [RUN_DIR ...]``: several runs' ``report.json`` side by side — a radar plot in the style of
the paper's Figure 1 (one filled polygon per run, or for `mtv ablate`'s seeds a mean ± std band; each axis scaled
to the runs' own range with the best value outermost, values written along the axes in the run's colour; each
run's own untrained floor dashed in its colour) and markdown tables: the headline metrics in the layout of the
paper's Table 5 (a row per model and one per model's floor, a column per metric) and every metric.

The runs may be different encoder families (SigLIP, CLIP, DINOv2, MTV): each brings its own floor, and a metric
its encoder cannot measure (a text probe of an image-only encoder) reads "n/a", not "—"."""

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


def _drawn(k: str, runs: list[tuple[str, dict]], spreads: list[dict], floor: dict,
           floors: list[dict] = ()) -> list[float]:
    """Every value drawn on axis ``k``: each run's mean ± std, the shared floor and each run's own floor."""
    return [v for (_, m), s in zip(runs, spreads) for v in (m[k] - s.get(k, 0), m[k] + s.get(k, 0))] \
        + [f[k] for f in (floor, *floors) if k in f]


def _closed(angles, radii):
    """The polygon's vertices with the first repeated at the end, so the outline closes."""
    import numpy as np

    return np.append(angles, angles[0]), np.append(radii, radii[0])


def spread_labels(fig, labels_by_axis: dict) -> None:
    """Moves each axis's value labels outward, nearest the centre first, until no two overlap on screen: runs
    whose values are close would otherwise print their figures over each other. Call after the layout is final
    (``tight_layout``), since overlap is measured in display space."""
    renderer = fig.canvas.get_renderer()
    for labels in labels_by_axis.values():
        placed = []
        for text in sorted(labels, key=lambda t: t.get_position()[1]):
            angle, radius = text.get_position()
            for _ in range(60):  # 0.9 of the radius at most: enough for six runs at one value
                if not any(text.get_window_extent(renderer).overlaps(box) for box in placed):
                    break
                radius += 0.015
                text.set_position((angle, radius))
            placed.append(text.get_window_extent(renderer))


def radar(runs: list[tuple[str, dict]], path: str | os.PathLike, spreads: list[dict | None] | None = None,
          floor: dict | None = None, floors: list[dict | None] | None = None) -> tuple[list[str], list[str]]:
    """Writes the radar PNG over the axes every run reports; returns those metric keys and the legend's labels.

    ``spreads`` (one dict of metric -> std per run, or ``None``) shades mean ± std around each run's polygon, so
    gaps within seed noise look like it; ``floor`` (metric -> value of an untrained encoder) adds a dashed grey
    polygon, the level training has to beat; ``floors`` (one per run, or ``None``) draws each run's own floor
    dashed in the run's colour, for runs of different architectures."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    keys = [k for k in AXES if all(k in m for _, m in runs)]
    if len(keys) < 3:
        raise MTVError(f"the runs share {len(keys)} radar metric(s) ({', '.join(keys) or 'none'}); a radar needs 3")
    spreads, floor, floors = _spreads(spreads, len(runs)), floor or {}, [f or {} for f in floors or [None] * len(runs)]
    scales = {k: _axis_scale(_drawn(k, runs, spreads, floor, floors), k.endswith(LOWER_IS_BETTER)) for k in keys}
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
    def dashed(level: dict, colour: str, label: str) -> None:  # NaN where a floor lacks an axis: the outline breaks
        ax.plot(*_closed(angles, [scales[k](level[k]) if k in level else np.nan for k in keys]), color=colour,
                linestyle="--", linewidth=2, label=label)

    if floor:
        dashed(floor, "#888", "untrained floor")
    values = {k: [] for k in keys}  # each axis's value labels, one per run
    for (name, metrics), spread, own_floor, colour in zip(runs, spreads, floors, COLOURS * 4):
        if own_floor:
            dashed(own_floor, colour, f"{name} untrained floor")
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
            values[k].append(ax.text(a, rad + 0.06, format_metric(k, metrics[k]).rstrip("%"), color=colour,
                                     fontsize=10, ha="center", va="center"))
    # below the plot, never over an axis label
    legend = ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3, fontsize=12, frameon=False)
    fig.tight_layout()
    spread_labels(fig, values)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=150, format="png")
    finally:
        plt.close(fig)
    return keys, [t.get_text() for t in legend.get_texts()]


def _cell(k: str, metrics: dict, spread: dict, inapplicable: dict) -> str:
    if k in metrics:
        return format_metric(k, metrics[k]) + (f" ± {format_metric(k, spread[k])}" if k in spread else "")
    return "n/a" if any(k.startswith(probe + "_") for probe in inapplicable) else "—"


def table(runs: list[tuple[str, dict]], spreads: list[dict | None] | None = None,
          not_applicable: list[dict] | None = None) -> str:
    """Every metric any run reports, one column per run; — where a run lacks it, n/a where its ``not_applicable``
    (probe -> why, one per run, or ``None``) names the probe. With ``spreads`` (metric -> std per run, or
    ``None``) a cell reads "mean ± std", so a difference can be judged against the noise."""
    keys = list(dict.fromkeys(k for _, m in runs for k in m))
    spreads, inapplicable = _spreads(spreads, len(runs)), not_applicable or [{}] * len(runs)
    lines = ["| metric | " + " | ".join(n for n, _ in runs) + " |", "|---|" + "---:|" * len(runs)]
    lines += [f"| {k} | " + " | ".join(_cell(k, m, s, na) for (_, m), s, na in zip(runs, spreads, inapplicable))
              + " |" for k in keys]
    return "\n".join(lines) + "\n"


def headline_table(named: list[tuple[str, dict]], prior: dict) -> str:
    """The paper's Table 5 layout: a row per model, then its untrained floor, a column per headline metric
    (`AXES`) any model reports; the image-free prior, which no model changes, is the last row."""
    keys = [k for k in AXES if any(k in r["metrics"] for _, r in named)]
    header = [AXES[k].replace("\n", " ") for k in keys]
    lines = ["| model | " + " | ".join(header) + " |", "|---|" + "---:|" * len(keys)]
    for name, report in named:
        na = report.get("not_applicable", {})
        rows = [(name, report["metrics"])] + ([(f"{name} untrained floor", report["metrics_floor"])]
                                              if report.get("metrics_floor") else [])
        lines += [f"| {label} | " + " | ".join(_cell(k, m, {}, na) for k in keys) + " |" for label, m in rows]
    if any(k in prior for k in keys):
        lines.append("| image-free prior | " + " | ".join(_cell(k, prior, {}, {}) for k in keys) + " |")
    return "\n".join(lines) + "\n"


def compare(run_dirs: list[str], out: str | os.PathLike) -> dict:
    """``compare.md`` in ``out`` — the headline table (`headline_table`), then every metric with each run's own
    untrained floor and the image-free prior as extra columns — and ``radar.png`` when the runs share at least 3
    radar metrics (``radar`` is None otherwise)."""
    named = load_reports(run_dirs)
    runs = [(name, report["metrics"]) for name, report in named]
    floors = [(f"{name} untrained floor", r["metrics_floor"]) for name, r in named if r.get("metrics_floor")]
    prior = reference_level([r for _, r in named], "metrics_prior")
    refs = floors + ([(REFERENCE_TITLES["metrics_prior"], prior)] if prior else [])
    na = [r.get("not_applicable", {}) for _, r in named] + [{}] * len(refs)
    out = writable_dir(out, "comparison", "--out")
    write_text(out / "compare.md", "# Models side by side\n\n" + headline_table(named, prior)
               + "\n## Every metric\n\n" + table(runs + refs, not_applicable=na))
    shared = [k for k in AXES if all(k in m for _, m in runs)]
    keys, legend = radar(runs, out / "radar.png", floors=[r.get("metrics_floor") for _, r in named]) \
        if len(shared) >= 3 else ([], [])
    return {"radar": str(out / "radar.png") if keys else None, "table": str(out / "compare.md"), "axes": keys,
            "legend": legend}
