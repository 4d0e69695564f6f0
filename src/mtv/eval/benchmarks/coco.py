"""COCO Karpathy test split (under ``coco/``): Karpathy's ``dataset_coco.json`` (images with ``split``,
``filepath``, ``filename`` and ``sentences[].raw``) beside the ``val2014/`` image folder; the 5000 ``test``
images, five captions each."""

from __future__ import annotations

import json
from pathlib import Path

from mtv.errors import MTVError
from mtv.eval.benchmarks import Split, limit, need

LAYOUT = "COCO Karpathy as <root>/coco/dataset_coco.json and <root>/coco/<filepath>/<filename> images"


def load_coco_karpathy(root: Path, max_samples: int | None = None) -> Split:
    root = root / "coco"
    path = need(root / "dataset_coco.json", LAYOUT)
    try:
        entries = [e for e in json.loads(path.read_text())["images"] if e["split"] == "test"]
        items = [(str(root / e["filepath"] / e["filename"]), [s["raw"].strip() for s in e["sentences"]])
                 for e in entries]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise MTVError(f"{path}: not a Karpathy split file ({type(e).__name__}: {e}); {LAYOUT}") from None
    items = limit(items, max_samples)
    if not items:
        raise MTVError(f"{path}: no image with split 'test'")
    return Split("coco-karpathy-test", [p for p, _ in items], captions=[[c for c in caps if c] for _, caps in items])
