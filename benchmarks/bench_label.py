"""Labelled images/s: `mtv label` against the `transformers` pipelines called per image, same images, same run.

    python benchmarks/bench_label.py [--images 48] [--resolution real|tiny] [--workers 2] [--batch-size 8]

Both sides use the same tiny randomly initialised Depth Anything and OWLv2 (the real classes and processors),
on scikit-image's photographs with their captions' noun phrases as queries. ``--resolution real`` keeps the real
experts' input sizes (518 px for depth, 960 px for OWLv2), so preprocessing costs what it costs in a real run
while the tiny towers make the model cheap; ``tiny`` uses 56/64 px, where per-call overhead dominates.

The baseline is what one would write by hand: ``pipeline("depth-estimation")`` and
``pipeline("zero-shot-object-detection")`` per image (the latter preprocesses and encodes the image once per
query phrase); it decodes the JPEG but writes nothing. `mtv label` also reads and writes the shards and encodes
the 16-bit depth PNGs, so its figure includes all of that.
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from pathlib import Path

import skimage.data as data
from PIL import Image

from common import machine
from mtv.data.shards import ShardWriter, shard_name
from mtv.experts import label_shards
from mtv.experts.boxes import save_tiny_owlv2
from mtv.experts.depth import save_tiny_depth_anything
from mtv.experts.phrases import PhraseConfig

PHOTOS = [("astronaut", "an astronaut holding a helmet next to a flag"), ("chelsea", "a cat sitting on a wooden table"),
          ("coffee", "a cup of coffee on a saucer"), ("rocket", "a rocket on the launch pad"),
          ("hubble_deep_field", "galaxies and stars in the night sky")]
PER_SHARD = 8


def write_shards(folder: Path, n: int) -> list[tuple[bytes, str]]:
    items = []
    for i in range(n):
        name, caption = PHOTOS[i % len(PHOTOS)]
        buf = io.BytesIO()
        Image.fromarray(getattr(data, name)()).save(buf, format="JPEG", quality=90)
        items.append((buf.getvalue(), caption))
    for s in range(0, n, PER_SHARD):
        with ShardWriter(folder / shard_name(s // PER_SHARD)) as w:
            for i in range(s, min(s + PER_SHARD, n)):
                w.write({"__key__": f"{i:06d}", "jpg": items[i][0], "txt": items[i][1].encode()})
    return items


def bench_pipelines(items, depth_dir: str, owl_dir: str) -> float:
    from transformers import pipeline

    depth = pipeline("depth-estimation", model=depth_dir, device="cpu")
    boxes = pipeline("zero-shot-object-detection", model=owl_dir, device="cpu")
    phrases = PhraseConfig()

    def one(jpeg, caption):
        image = Image.open(io.BytesIO(jpeg)).convert("RGB")
        depth(image)
        boxes(image, candidate_labels=phrases.queries(caption), threshold=0.3)

    one(*items[0])  # warm-up
    start = time.perf_counter()
    for item in items:
        one(*item)
    return len(items) / (time.perf_counter() - start)


def bench_label(folder: Path, out: Path, depth_dir: str, owl_dir: str, workers: int, batch_size: int) -> float:
    kwargs = dict(depth=depth_dir, boxes=owl_dir, device="cpu", workers=workers, batch_size=batch_size,
                  log=lambda *_: None)
    label_shards(str(folder), out / "warm-up", **kwargs)  # imports, first-call allocations
    summary = label_shards(str(folder), out / "timed", **kwargs)
    return summary["images_per_s"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=48)
    p.add_argument("--resolution", choices=["real", "tiny"], default="real")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    p.add_argument("--batch-size", type=int, default=8)
    a = p.parse_args()
    print(machine())
    depth_size, owl_size = (518, 960) if a.resolution == "real" else (56, 64)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "in").mkdir()
        items = write_shards(tmp / "in", a.images)
        depth_dir = save_tiny_depth_anything(tmp / "depth", size=depth_size)
        owl_dir = save_tiny_owlv2(tmp / "owl", size=owl_size)
        base = bench_pipelines(items, depth_dir, owl_dir)
        ours = bench_label(tmp / "in", tmp, depth_dir, owl_dir, a.workers, a.batch_size)
    print(f"{a.images} photos, tiny experts at {depth_size}/{owl_size} px, "
          f"mtv label --workers {a.workers} --batch-size {a.batch_size}")
    print(f"  transformers pipelines, per image: {base:7.2f} images/s")
    print(f"  mtv label:                         {ours:7.2f} images/s  ({ours / base:.1f}x)")


if __name__ == "__main__":
    main()
