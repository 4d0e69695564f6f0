"""Whether the shipped CPU configs fit their time budgets on this machine, without running them whole: the demo's
training (`make demo`, 15 minutes in all) and `mtv ablate`'s 3-seed ladder (90 minutes), per precision.

    python benchmarks/bench_budget.py [--steps 10] [--precision bf16 fp32] [--seeds 3]

Run it after `make demo`: both configs read the demo's world. The demo recipe and each ladder rung train
``--steps`` steps with `mtv.train.train` into a temporary folder; the projection is their seconds per step × the
config's steps (× seeds for the ladder), timed over the second half of the steps. That is training only. Start-up,
export, evaluation and floors come on top: they were 15 % of the 3-seed ladder's wall time in docs/DIAGNOSIS.md
round 9 (training 36 min 33 s of 43 min 8 s), so the ladder's wall line divides by 0.85.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from common import machine
from mtv.ablate import designs, rung_config
from mtv.config import load_config
from mtv.train.loop import train

CONFIGS = Path(__file__).resolve().parents[1] / "src" / "mtv" / "configs"
TRAINING_SHARE = 0.85  # of the ladder's wall time, measured (see above)


def seconds_per_step(cfg, steps: int) -> float:
    """Over the second half of ``steps`` (its last logged interval): the first step and the data start-up are
    counted once in a run, not per step."""
    with tempfile.TemporaryDirectory() as run:
        cfg = cfg.model_copy(update={"run_dir": run, "steps": steps, "ckpt_every": steps,
                                     "log_every": steps // 2})
        train(cfg, progress=False)
        last = json.loads((Path(run) / "metrics.jsonl").read_text().splitlines()[-1])
        return cfg.batch_size / last["images_per_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=10, help="steps timed per recipe (default 10)")
    ap.add_argument("--precision", nargs="+", default=["bf16", "fp32"], choices=["bf16", "fp16", "fp32"])
    ap.add_argument("--seeds", type=int, default=3, help="seeds of the ladder (mtv ablate --seeds; default 3)")
    args = ap.parse_args()
    print(machine())
    demo, ablation = CONFIGS / "demo.yaml", CONFIGS / "ablation.yaml"
    for precision in args.precision:
        cfg = load_config(demo, [f"precision={precision}"])
        demo_s = seconds_per_step(cfg, args.steps) * cfg.steps
        print(f"[{precision}] demo: {cfg.steps} steps of {cfg.batch_size} images, training {demo_s / 60:.1f} min "
              f"(the whole demo has 15 min)")
        total = 0.0
        for label, switches in designs()["ladder"]:
            cfg = rung_config(str(ablation), Path("unused"), switches, [f"precision={precision}"], seed=0)
            per_step = seconds_per_step(cfg, args.steps)
            total += per_step * cfg.steps * args.seeds
            print(f"[{precision}] ladder rung {label}: {per_step:.2f} s a step, {per_step * cfg.steps / 60:.1f} min "
                  "a seed")
        wall = total / TRAINING_SHARE
        print(f"[{precision}] ladder, {args.seeds} seeds: training {total / 60:.1f} min, wall about {wall / 60:.1f} "
              f"min of 90 ({90 * 60 / wall:.1f}x headroom)")


if __name__ == "__main__":
    main()
