"""`mtv demo`: the whole chain on MTV World — world → train → export → eval → the Quick Start — on a CPU.

Rerunning it reuses what is already there: worlds with the same settings, and the training run (resumed).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

from mtv.config import load_config
from mtv.data.shards import DATASET_META, list_shards, read_samples
from mtv.train import checkpoint

TRAIN_SCENES, VAL_SCENES, SIZE = 8000, 1000, 64
EVAL_SCENES = 500  # per split for the probes: the whole world suite in well under a minute


def demo_config_path() -> str:
    return str(resources.files("mtv") / "configs" / "demo.yaml")


def _world(out: Path, n: int, seed: int, preview: Path | None = None) -> None:
    from mtv.world import generate_world
    from mtv.world.generate import WORLD_VERSION

    meta = out / DATASET_META
    if meta.exists():
        m = json.loads(meta.read_text())
        if (m.get("n"), m.get("seed"), m.get("size"), m.get("version")) == (n, seed, SIZE, WORLD_VERSION):
            print(f"world: reusing {out}")
            return
    generate_world(out, n, seed, size=SIZE, workers=os.cpu_count() or 1, shard_size=250, preview=preview)


def _quickstart_image(val: Path, out: Path) -> tuple[Path, str]:
    """A held-out scene saved as a PNG file, and its class, for the Quick Start to look at."""
    from mtv.data.schema import decode_image, decode_json

    raw = next(iter(read_samples(list_shards(val))))
    path = out / "quickstart.png"
    decode_image(raw).save(path)
    return path, decode_json(raw)["class"]


def run_demo(out: str | os.PathLike = "runs/demo", steps: int | None = None) -> dict:
    from mtv.eval.report import format_metric
    from mtv.eval.suite import run_suite
    from mtv.export import export
    from mtv.train import train

    out = Path(out)
    train_dir, val_dir = out / "world" / "train", out / "world" / "val"
    _world(train_dir, TRAIN_SCENES, seed=0, preview=out / "world" / "preview.png")
    _world(val_dir, VAL_SCENES, seed=1)

    overrides = [f"run_dir={out / 'train'}", f"data.train={train_dir}"] + ([f"steps={steps}"] if steps else [])
    cfg = load_config(demo_config_path(), overrides)
    train(cfg, resume=checkpoint.latest(cfg.run_dir) is not None)
    export_dir = export(cfg.run_dir, out / "export")
    report = run_suite(export_dir, val_dir, out, "world", train=train_dir, max_samples=EVAL_SCENES)

    m = report["metrics"]
    print(f"held-out zero-shot top-1 {m['zeroshot_top1']:.1%} (chance {report['chance']['zeroshot_top1']:.1%}), "
          f"top-5 {m['zeroshot_top5']:.1%}; retrieval R@1 image→text {m['retrieval_i2t_r1']:.1%}, "
          f"text→image {m['retrieval_t2i_r1']:.1%}; the full table: {out / 'report.md'}")
    floor, prior = report["metrics_floor"], report["metrics_prior"]
    for k in ("seg_miou", "depth_rmse", "corr_geo_recall", "corr_sem_pck"):
        if k in m and k in floor:
            print(f"  {k}: {format_metric(k, m[k])}, untrained floor {format_metric(k, floor[k])}"
                  + (f", image-free prior {format_metric(k, prior[k])}" if k in prior else ""))

    image, cls = _quickstart_image(val_dir, out)
    other = "blue sphere" if cls != "blue sphere" else "red cube"
    texts = [f"a photo of a {cls}", f"a photo of a {other}"]
    print(f"Quick Start on {export_dir} with {image} (a {cls}):")
    subprocess.run([sys.executable, "-m", "mtv.quickstart", str(export_dir), str(image), *texts], check=True)
    return report
