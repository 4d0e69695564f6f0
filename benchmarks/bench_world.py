"""MTV World generation speed: images/s per core, end to end (both views rendered, PNG-encoded, written to
shards), first on one process, then on every core.

    python benchmarks/bench_world.py [--n 600] [--size 64]

The one-process figure is the per-core speed; the all-core figure shows how it scales (process start-up
included, so use a few thousand images for a fair reading on many cores).
"""

from __future__ import annotations

import argparse
import os
import tempfile

from common import machine
from mtv.world import generate_world


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=600, help="images per measurement")
    p.add_argument("--size", type=int, default=64)
    a = p.parse_args()
    print(machine())
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as out:  # warm-up: imports and caches
        generate_world(out, 8, 0, size=a.size, progress=False)
    for workers in sorted({1, cores}):
        with tempfile.TemporaryDirectory() as out:
            s = generate_world(out, a.n, 0, size=a.size, workers=workers, shard_size=max(a.n // (4 * workers), 1),
                               progress=False)
        print(f"world {a.size}px, {a.n} images, {workers} process(es): {s['images_per_s']:.1f} images/s, "
              f"{s['images_per_s'] / workers:.1f} images/s per core")


if __name__ == "__main__":
    main()
