"""Oracle experts for MTV World: pseudo-labels made from the renderer's truth, optionally degraded.

They let the demo and the objective ablation run "as if" labelled by Depth Anything and OWLv2 on a machine
without their weights, and make label quality a knob: ``box_noise`` jitters box edges, ``drop`` leaves boxes
out (a detector's misses), ``depth_noise`` multiplies inverse depth by smooth log-normal noise (a depth
expert's errors are low-frequency, not per-pixel). The noise of a sample depends only on (seed, key), so it is
the same whatever the batch size, worker count or resumption.

Output is exactly what the real experts give: relative inverse depth, 1 / metric z — where the renderer found
no surface (the sky) the scene is infinitely far, so 0, which is also what Depth Anything predicts there — and
boxes with phrases and scores (1.0) through the same ``BoxFilter``.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from mtv.data.schema import metric_depth
from mtv.errors import MTVError, SkipSample
from mtv.experts.boxes import BoxFilter

NOISE_CELL = 8  # pixels per cell of the coarse grid that depth noise is drawn on


@dataclass(frozen=True)
class OracleConfig:
    box_noise: float = 0.0  # σ of each box edge's shift, as a fraction of the box's width (x) or height (y)
    drop: float = 0.0  # probability that a visible object gets no box
    depth_noise: float = 0.0  # σ of log inverse depth, drawn on a coarse grid and upsampled
    seed: int = 0

    def __post_init__(self):
        if self.box_noise < 0 or self.depth_noise < 0 or not 0 <= self.drop <= 1:
            raise MTVError(f"oracle: noise must be >= 0 and drop in [0, 1]; got box_noise={self.box_noise}, "
                           f"drop={self.drop}, depth_noise={self.depth_noise}")


def _rng(cfg: OracleConfig, sample: dict, stream: int) -> np.random.Generator:
    return np.random.default_rng([cfg.seed, stream, zlib.crc32(sample["__key__"].encode())])


class OracleDepthPrep:
    def __init__(self, cfg: OracleConfig):
        self.cfg = cfg

    def __call__(self, sample: dict, image, caption: str, meta: dict) -> np.ndarray:
        z = metric_depth(sample, meta)
        inv = np.zeros(z.shape, np.float32)
        surface = z > 0  # False for NaN (no surface)
        inv[surface] = 1.0 / z[surface]
        if self.cfg.depth_noise:
            h, w = z.shape
            coarse = _rng(self.cfg, sample, 0).normal(size=(1, 1, h // NOISE_CELL + 2, w // NOISE_CELL + 2))
            smooth = F.interpolate(torch.from_numpy(coarse), size=(h, w), mode="bilinear", align_corners=True)
            inv *= np.exp(self.cfg.depth_noise * smooth[0, 0].numpy()).astype(np.float32)
        return inv


class OracleBoxPrep:
    def __init__(self, cfg: OracleConfig, box_filter: BoxFilter):
        self.cfg, self.filter = cfg, box_filter

    def __call__(self, sample: dict, image, caption: str, meta: dict) -> list[dict]:
        if "objects" not in meta:
            raise SkipSample("no_truth_boxes")
        rng = _rng(self.cfg, sample, 1)
        rows, phrases = [], []
        for obj in meta["objects"]:
            if obj.get("box") is None:
                continue
            dropped, shifts = rng.random() < self.cfg.drop, rng.normal(size=4)  # draw both: streams stay aligned
            if dropped:
                continue
            x0, y0, x1, y1 = obj["box"]
            sizes = np.array([x1 - x0, y1 - y0, x1 - x0, y1 - y0], dtype=np.float64)
            x0, y0, x1, y1 = np.array(obj["box"], dtype=np.float64) + self.cfg.box_noise * shifts * sizes
            x0, x1 = sorted(np.clip([x0, x1], 0, image.width))
            y0, y1 = sorted(np.clip([y0, y1], 0, image.height))
            rows.append([x0, y0, x1, y1])
            phrases.append(obj["phrase"])
        groups = {p: i for i, p in enumerate(dict.fromkeys(phrases))}  # NMS per phrase, like the real expert
        return self.filter(torch.tensor(rows, dtype=torch.float32).reshape(-1, 4), torch.ones(len(rows)),
                           torch.tensor([groups[p] for p in phrases], dtype=torch.long), phrases)


class _Oracle:
    """All work happens in the decoding workers (``prep``); ``label`` just hands the results on."""

    min_side = 1

    def __init__(self, prep, provenance: dict):
        self.prep, self._provenance = prep, provenance

    def provenance(self) -> dict:
        return dict(self._provenance)

    def label(self, payloads: list) -> list:
        return list(payloads)


class OracleDepth(_Oracle):
    kind = "depth"

    def __init__(self, cfg: OracleConfig = OracleConfig()):
        super().__init__(OracleDepthPrep(cfg), {"expert": "oracle", "licence": "same as the input data",
                                                "depth_noise": cfg.depth_noise, "seed": cfg.seed})


class OracleBoxes(_Oracle):
    kind = "boxes"

    def __init__(self, cfg: OracleConfig = OracleConfig(), box_filter: BoxFilter = BoxFilter()):
        super().__init__(OracleBoxPrep(cfg, box_filter),
                         {"expert": "oracle", "licence": "same as the input data", "box_noise": cfg.box_noise,
                          "drop": cfg.drop, "seed": cfg.seed, **box_filter.provenance()})
