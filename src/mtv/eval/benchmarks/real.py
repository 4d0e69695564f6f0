"""The real benchmarks under one root folder, one per probe; each data set is loaded once and shared
(NYUv2's test split feeds both the depth probe and the depth head)."""

from __future__ import annotations

from pathlib import Path

from mtv.errors import MTVError
from mtv.eval.benchmarks import Split, real_root
from mtv.eval.benchmarks.ade20k import load_ade20k
from mtv.eval.benchmarks.coco import load_coco_karpathy
from mtv.eval.benchmarks.imagenet import load_imagenet
from mtv.eval.benchmarks.kitti import load_kitti
from mtv.eval.benchmarks.navi import load_navi
from mtv.eval.benchmarks.nyuv2 import load_nyuv2
from mtv.eval.benchmarks.spair import load_spair

# probe -> [(metric-key suffix, training data set or None, test data set)]
REAL_LAYOUT = {
    "zeroshot": [("", None, "imagenet")],
    "retrieval": [("", None, "coco")],
    "seg": [("", "ade20k-train", "ade20k-val")],
    "depth": [("", "nyuv2-train", "nyuv2-test")],
    "corr_geo": [("", None, "navi")],
    "corr_sem": [("", None, "spair")],
    "depth_head": [("", None, "nyuv2-test"), ("_kitti", None, "kitti")],
}


class RealData:
    def __init__(self, root: str, max_samples: int | None):
        self.root: Path = real_root(root)
        self.max_samples = max_samples
        self._loaded: dict[str, Split] = {}

    def _load(self, name: str) -> Split:
        if name not in self._loaded:
            r, n = self.root, self.max_samples
            self._loaded[name] = {
                "imagenet": lambda: load_imagenet(r, n), "coco": lambda: load_coco_karpathy(r, n),
                "ade20k-train": lambda: load_ade20k(r, "training", n),
                "ade20k-val": lambda: load_ade20k(r, "validation", n),
                "nyuv2-train": lambda: load_nyuv2(r, "train", n), "nyuv2-test": lambda: load_nyuv2(r, "test", n),
                "kitti": lambda: load_kitti(r, n), "navi": lambda: load_navi(r, n), "spair": lambda: load_spair(r, n),
            }[name]()
        return self._loaded[name]

    def splits(self, probe: str) -> list[tuple[str, Split | None, Split]]:
        if probe not in REAL_LAYOUT:
            raise MTVError(f"no real benchmark loader for {probe} in this suite (RefCOCO is not implemented)")
        return [(suffix, self._load(tr) if tr else None, self._load(te)) for suffix, tr, te in REAL_LAYOUT[probe]]

    def all_splits(self) -> list[Split]:
        return list(self._loaded.values())
