"""The real benchmarks under one root folder, one or more per probe; each data set is loaded once and shared
(NYUv2's test split feeds both the depth probe and the depth head). A probe with several benchmarks runs on those
on disk and names the missing ones in ``missing``."""

from __future__ import annotations

import functools
from pathlib import Path

from mtv.eval.benchmarks import MissingData, Split, real_root
from mtv.eval.benchmarks.ade20k import load_ade20k
from mtv.eval.benchmarks.coco import load_coco_karpathy
from mtv.eval.benchmarks.imagenet import load_imagenet
from mtv.eval.benchmarks.kitti import load_kitti
from mtv.eval.benchmarks.navi import load_navi
from mtv.eval.benchmarks.nyuv2 import load_nyuv2
from mtv.eval.benchmarks.refcoco import DATASETS as REFER_DATASETS, load_refcoco
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
    "grounding": [(f"_{d.replace('+', 'plus')}_{s}", None, f"{d}-{s}") for d, (_, splits) in REFER_DATASETS.items()
                  for s in splits],
}


class RealData:
    def __init__(self, root: str, max_samples: int | None):
        self.root: Path = real_root(root)
        self.max_samples = max_samples
        self._loaded: dict[str, Split] = {}
        self.missing: dict[str, str] = {}  # probe + suffix -> why, for benchmarks of a probe not on disk

    def _load(self, name: str) -> Split:
        if name not in self._loaded:
            r, n = self.root, self.max_samples
            self._loaded[name] = {
                "imagenet": lambda: load_imagenet(r, n), "coco": lambda: load_coco_karpathy(r, n),
                "ade20k-train": lambda: load_ade20k(r, "training", n),
                "ade20k-val": lambda: load_ade20k(r, "validation", n),
                "nyuv2-train": lambda: load_nyuv2(r, "train", n), "nyuv2-test": lambda: load_nyuv2(r, "test", n),
                "kitti": lambda: load_kitti(r, n), "navi": lambda: load_navi(r, n), "spair": lambda: load_spair(r, n),
                **{f"{d}-{s}": functools.partial(load_refcoco, r, d, s, n)
                   for d, (_, splits) in REFER_DATASETS.items() for s in splits},
            }[name]()
        return self._loaded[name]

    def splits(self, probe: str) -> list[tuple[str, Split | None, Split]]:
        found, absent = [], []
        for suffix, tr, te in REAL_LAYOUT[probe]:
            try:
                found.append((suffix, self._load(tr) if tr else None, self._load(te)))
            except MissingData as e:
                absent.append((suffix, e))
        if not found:
            raise absent[0][1]
        self.missing.update({probe + suffix: str(e) for suffix, e in absent})
        return found

    def all_splits(self) -> list[Split]:
        return list(self._loaded.values())
