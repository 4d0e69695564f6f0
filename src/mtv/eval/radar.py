"""``mtv report RUN_DIR [RUN_DIR ...]``: several runs' ``report.json`` side by side — a radar plot in the style of
the paper's Figure 1 (one filled polygon per run, each axis scaled to the runs' own range with the best value
outermost, values written along the axes in the run's colour) and a markdown table."""

from __future__ import annotations

import json
import os
from pathlib import Path

from mtv.errors import MTVError
from mtv.eval.report import LOWER_IS_BETTER, format_metric

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


def load_runs(run_dirs: list[str]) -> list[tuple[str, dict]]:
    runs = []
    for d in run_dirs:
        path = Path(d) / "report.json"
        if not path.exists():
            raise MTVError(f"{path}: not found; pass run directories written by mtv eval")
        try:
            runs.append((Path(d).name or str(d), json.loads(path.read_text())["metrics"]))
        except (json.JSONDecodeError, KeyError) as e:
            raise MTVError(f"{path}: not an mtv eval report ({type(e).__name__})") from None
    return runs


def _axis_positions(values: list[float], lower_better: bool) -> list[float]:
    """Radius in [0.35, 1]: the runs' worst value sits inside, the best on the rim, so small gaps stay visible."""
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    return [0.35 + 0.65 * ((hi - v) if lower_better else (v - lo)) / span for v in values]


def radar(runs: list[tuple[str, dict]], path: str | os.PathLike) -> list[str]:
    """Writes the radar PNG over the axes every run reports; returns those metric keys."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    keys = [k for k in AXES if all(k in m for _, m in runs)]
    if len(keys) < 3:
        raise MTVError(f"the runs share {len(keys)} radar metric(s) ({', '.join(keys) or 'none'}); a radar needs 3")
    angles = np.arange(len(keys)) * 2 * np.pi / len(keys)
    radii = np.array([_axis_positions([m[k] for _, m in runs], k.endswith(LOWER_IS_BETTER)) for k in keys]).T
    fig = plt.figure(figsize=(8, 7))
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
    for (name, metrics), r, colour in zip(runs, radii, COLOURS * 4):
        closed_a, closed_r = np.append(angles, angles[0]), np.append(r, r[0])
        ax.plot(closed_a, closed_r, color=colour, linewidth=3, label=name)
        ax.fill(closed_a, closed_r, color=colour, alpha=0.12)
        for a, rad, k in zip(angles, r, keys):
            ax.text(a, rad + 0.06, format_metric(k, metrics[k]).rstrip("%"), color=colour, fontsize=10,
                    ha="center", va="center")
    ax.legend(loc="lower right", bbox_to_anchor=(1.25, -0.08), fontsize=13, frameon=True)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return keys


def table(runs: list[tuple[str, dict]]) -> str:
    """Every metric any run reports, one column per run; — where a run lacks it."""
    keys = list(dict.fromkeys(k for _, m in runs for k in m))
    lines = ["| metric | " + " | ".join(n for n, _ in runs) + " |", "|---|" + "---:|" * len(runs)]
    lines += [f"| {k} | " + " | ".join(format_metric(k, m[k]) if k in m else "—" for _, m in runs) + " |"
              for k in keys]
    return "\n".join(lines) + "\n"


def compare(run_dirs: list[str], out: str | os.PathLike) -> dict:
    """``radar.png`` and ``compare.md`` in ``out``."""
    runs = load_runs(run_dirs)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    keys = radar(runs, out / "radar.png")
    (out / "compare.md").write_text("# Runs side by side\n\n" + table(runs))
    return {"radar": str(out / "radar.png"), "table": str(out / "compare.md"), "axes": keys}
