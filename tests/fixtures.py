"""Small data and model builders shared by tests (plain functions; pytest fixtures live in conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mtv.data.shards import DATASET_META, ShardWriter, shard_name

from mtv.data.schema import encode_json, encode_png

TOY_COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 230, 20)}
TOY_SHAPES = ("square", "disc")
TOY_CLASSES = [f"{c} {s}" for c in TOY_COLOURS for s in TOY_SHAPES]


def toy_image(colour: str, shape: str, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    img = np.full((size, size, 3), 128, np.uint8)
    r = size // 6
    cy, cx = rng.integers(r, size - r, 2)
    yy, xx = np.mgrid[:size, :size]
    mask = (np.abs(yy - cy) < r) & (np.abs(xx - cx) < r) if shape == "square" else (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
    img[mask] = TOY_COLOURS[colour]
    return img


def write_toy_shards(folder: str | Path, n_shards: int = 4, per_shard: int = 16, seed: int = 0,
                     corrupt: dict[int, str] | None = None) -> list[str]:
    """Coloured squares and discs with captions; ``corrupt`` maps a sample index to a defect:
    ``image`` (undecodable bytes), ``caption`` (empty text)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng, corrupt, paths, i = np.random.default_rng(seed), corrupt or {}, [], 0
    (folder / DATASET_META).write_text(json.dumps({"classes": TOY_CLASSES, "templates": ["a photo of a {}."]}))
    for s in range(n_shards):
        path = folder / shard_name(s)
        with ShardWriter(path) as w:
            for _ in range(per_shard):
                cid = int(rng.integers(len(TOY_CLASSES)))
                colour, shape = TOY_CLASSES[cid].split()
                png = encode_png(toy_image(colour, shape, rng))
                caption = f"a photo of a {colour} {shape}"
                if corrupt.get(i) == "image":
                    png = b"\x89PNG not really"
                if corrupt.get(i) == "caption":
                    caption = "  "
                w.write({"__key__": f"{i:08d}", "png": png, "txt": caption.encode(),
                         "json": encode_json({"class": TOY_CLASSES[cid], "class_id": cid})})
                i += 1
        paths.append(str(path))
    return paths


# An SSL head small enough for micro runs of seconds (the default has 4096 prototypes and 6 local crops).
SMALL_SSL = {"n_local": 2, "prototypes": 64, "head_hidden": 32, "bottleneck": 16}


def train_tree(run_dir: str | Path, data: str | Path, **extra) -> dict:
    """A config tree for a seconds-long training run of the `micro` preset."""
    # toy shards carry no depth or boxes: the missing-label stop is tested on its own, off here
    tree = {"run_dir": str(run_dir), "data": {"train": str(data), "workers": 0, "shuffle_buffer": 16,
                                              "max_missing_label_fraction": 1.0},
            "model": {"preset": "micro", "vocab_size": 200}, "steps": 6, "batch_size": 8,
            "optim": {"warmup_steps": 2}, "log_every": 1, "ckpt_every": 3, "threads": 1}
    for key, value in extra.items():
        node = tree
        *parents, leaf = key.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree

