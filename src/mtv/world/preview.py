"""A PNG grid of the first scenes as written to the shards, for a person to check the data by eye: image with
boxes and phrases, depth, semantic labels, second view."""

from __future__ import annotations

import os
import textwrap
from itertools import islice
from pathlib import Path

import numpy as np

from mtv.atomic import atomic_path
from mtv.data.schema import SEG, VIEW2, decode_depth, decode_image, decode_json
from mtv.data.shards import read_samples
from mtv.world.render import SEMANTIC_LABELS


SEG_COLOURS = "tab10"  # one colour per SEMANTIC_LABELS entry (there are at most 10)


def seg_key(shown, seg: np.ndarray) -> list:
    """Legend patches for the labels present in ``seg``, each in the colour ``shown`` (the AxesImage) gives it."""
    from matplotlib.patches import Patch

    return [Patch(color=shown.cmap(shown.norm(v)), label=SEMANTIC_LABELS[v]) for v in np.unique(seg)]


def write_preview(shards: list[str], path: str | os.PathLike, count: int = 8) -> None:
    # Figure + Agg canvas, not pyplot: no global backend switch, no GUI, safe in any process.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    samples = list(islice(read_samples(shards), count))
    fig = Figure(figsize=(4 * 2.2, len(samples) * 2.5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(samples), 4, squeeze=False)
    for row, raw in zip(axes, samples):
        meta = decode_json(raw)
        row[0].imshow(decode_image(raw), interpolation="nearest")
        for k, obj in enumerate(meta["objects"]):
            if obj["box"] is None:
                continue
            x0, y0, x1, y1 = obj["box"]
            colour = "yellow" if k == meta["main"] else "white"
            row[0].add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, lw=1, ec=colour))
            row[0].text(x0 - 0.5, y0 - 1, obj["phrase"], color=colour, fontsize=5, va="bottom",
                        bbox={"fc": "black", "alpha": 0.5, "pad": 0.5, "lw": 0})
        row[0].set_title(textwrap.fill(raw["txt"].decode(), 40), fontsize=6)
        depth = decode_depth(raw, meta["depth"])
        shown = row[1].imshow(np.ma.masked_invalid(depth), cmap="viridis_r", interpolation="nearest")
        bar = fig.colorbar(shown, ax=row[1], fraction=0.046, pad=0.02)
        bar.ax.tick_params(labelsize=5)
        bar.set_label("metres", fontsize=5)
        row[1].set_title("depth", fontsize=6)
        seg = np.asarray(decode_image(raw, SEG))[..., 0]
        shown = row[2].imshow(seg, cmap=SEG_COLOURS, vmin=0, vmax=len(SEMANTIC_LABELS) - 1, interpolation="nearest")
        row[2].legend(handles=seg_key(shown, seg), loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2,
                      fontsize=5, frameon=False, handlelength=1, columnspacing=0.8)
        row[2].set_title("semantic labels", fontsize=6)
        row[3].imshow(decode_image(raw, VIEW2), interpolation="nearest")
        row[3].set_title("view 2", fontsize=6)
        for ax in row:
            ax.set_axis_off()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, "--preview") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
