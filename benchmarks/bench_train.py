"""Training throughput and FLOP utilisation of one step, per model size: the image–text (VL-only) step against
the full multi-task step (VL + SSL + grounding + depth), on this machine.

    python benchmarks/bench_train.py [--sizes tiny base] [--steps 3] [--precision auto] [--compile inductor]
    python benchmarks/bench_train.py --sizes tiny --compile inductor     # compiled vs eager, compile time

It times `mtv.train.step.train_step`, the step `mtv train` runs (forward, backward, clipping, AdamW, EMA).

FLOP utilisation = (FLOPs of one step, counted by torch's FlopCounterMode) × steps/s ÷ the machine's matmul
FLOP/s in the same precision, measured in the same run. Inputs are synthetic tensors of the shapes the data
loader produces (so data loading is not measured here); the multi-task step uses the default objective
configs (6 local crops, 4096 prototypes, 10 boxes per image in 8 distinct phrases).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from common import machine, matmul_flops
from mtv.config import build_config
from mtv.data.batch import Batch
from mtv.data.multicrop import local_crop_size
from mtv.models.siglip import build_model, preset_config
from mtv.objectives.multitask import MultiTask
from mtv.train.distributed import Dist
from mtv.train.precision import autocast_dtype
from mtv.train.optim import build_optimizer
from mtv.train.schedule import ScheduleTable
from mtv.train.step import Engine, compiled, train_step

BATCH = {"micro": 64, "tiny": 64, "small": 16, "base": 8, "large": 4}
TEXT, VOCAB, BOXES, PHRASES = 64, 1000, 10, 8
OFF = {"ssl": {"enabled": False}, "grounding": {"enabled": False}, "depth": {"enabled": False}}


def synthetic_batch(cfg, task: MultiTask, vision, b: int, gen: torch.Generator) -> tuple[Batch, dict]:
    """A batch of the shapes the loader gives, and the objectives' plan at step 0."""
    s, p = vision.image_size, vision.patch_size
    plan = task.plan(0, cfg.steps)
    batch = Batch(pixel_values=torch.randn(b, 3, s, s, generator=gen),
                  input_ids=torch.randint(0, VOCAB, (b, TEXT), generator=gen))
    if cfg.ssl.enabled:
        ls = local_crop_size(s, p, cfg.ssl.local_fraction)
        batch.global2 = torch.randn(b, 3, s, s, generator=gen)
        batch.locals = torch.randn(b, cfg.ssl.n_local, 3, ls, ls, generator=gen)
    if cfg.grounding.enabled:
        xy = torch.rand(b, BOXES, 2, generator=gen) * 0.5
        batch.boxes = torch.cat([xy, xy + 0.25 + 0.25 * torch.rand(b, BOXES, 2, generator=gen)], -1)
        batch.box_valid = torch.ones(b, BOXES, dtype=torch.bool)
        batch.entity_ids = torch.randint(0, PHRASES, (b, BOXES), generator=gen)
        batch.phrase_ids = torch.randint(0, VOCAB, (PHRASES, TEXT), generator=gen)
        batch.phrase_index = batch.entity_ids
    if cfg.depth.enabled:
        batch.depth = torch.rand(b, 1, s, s, generator=gen) + 0.1
        batch.depth_valid = torch.ones(b, dtype=torch.bool)
    for name, schedule in plan.items():
        for field, value in task.objectives[name].step_inputs(schedule, b, (s // p, s // p),
                                                               np.random.default_rng(0)).items():
            setattr(batch, field, value)
    return batch, plan


def step_fn(size: str, objectives: str, precision: str, compile_backend: str | None = None):
    """The training loop's own `train_step` on a synthetic batch (eager, or compiled with ``compile_backend``)."""
    tree = {"run_dir": "unused", "data": {"train": "unused"}, "steps": 1000, "batch_size": BATCH[size],
            "model": {"preset": size, "text_length": TEXT}, **(OFF if objectives == "vl" else {})}
    cfg = build_config(tree)
    model = build_model(preset_config(size, vocab_size=VOCAB, text_length=TEXT, pad_id=0, eos_id=1))
    task = MultiTask(model, cfg)
    opt, rules = build_optimizer(task, cfg)
    row = ScheduleTable(cfg, task, rules, cfg.optim.lr).row(cfg.optim.warmup_steps)
    batch, _ = synthetic_batch(cfg, task, model.config.vision_config, BATCH[size], torch.Generator().manual_seed(0))
    dtype = autocast_dtype(precision, torch.device("cpu"))
    forward = compiled(task, compile_backend) if compile_backend else task
    engine = Engine(task, task, forward, opt, torch.amp.GradScaler("cpu", enabled=False), dtype, 1,
                    cfg.optim.grad_clip, Dist(0, 1, 0, torch.device("cpu")))

    def step():
        train_step(engine, lambda micro: batch, row)

    return step, BATCH[size], dtype


def measure(size: str, objectives: str, steps: int, precision: str, peak: dict, compile_backend: str | None = None,
            flops: float | None = None) -> dict:
    """One row, timed after two warm-up steps (a compiled step's first compiles, its second may recompile once).
    A compiled step reuses the eager step's FLOP count (``flops``); its ``compile_s`` is what the two warm-up
    calls took beyond two timed steps."""
    step, batch, dtype = step_fn(size, objectives, precision, compile_backend)
    warm = time.perf_counter()
    if flops is None:
        with FlopCounterMode(display=False) as counter:
            step()
        flops = counter.get_total_flops()
    else:
        step()
    step()
    warm = time.perf_counter() - warm
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sec = (time.perf_counter() - start) / steps
    if dtype not in peak:
        peak[dtype] = matmul_flops(dtype)
    return {"size": size, "objectives": objectives + ("+c" if compile_backend else ""), "batch": batch,
            "precision": str(dtype or "fp32").replace("torch.", ""), "images_per_s": batch / sec, "flops": flops,
            "step_s": sec, "compile_s": warm - 2 * sec if compile_backend else 0.0,
            "gflop_per_image": flops / batch / 1e9, "model_tflops": flops / sec / 1e12,
            "peak_tflops": peak[dtype] / 1e12, "utilisation": flops / sec / peak[dtype]}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", nargs="+", default=["tiny", "base"])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    p.add_argument("--compile", metavar="BACKEND", help="also time the full step compiled with this torch.compile "
                   "backend (inductor, aot_eager); its row is 'all+c', then eager vs compiled steps/s and the "
                   "compile time")
    a = p.parse_args()
    print(machine())
    print(f"{'size':<6} {'step':<5} {'batch':>5} {'precision':>9} {'images/s':>9} {'step s':>7} {'GFLOP/img':>10} "
          f"{'model TFLOP/s':>14} {'matmul TFLOP/s':>15} {'utilisation':>11}")
    peak: dict = {}
    for size in a.sizes:
        rows = [measure(size, objectives, a.steps, a.precision, peak) for objectives in ("vl", "all")]
        if a.compile:
            rows.append(measure(size, "all", a.steps, a.precision, peak, a.compile, flops=rows[1]["flops"]))
        for r in rows:
            print(f"{r['size']:<6} {r['objectives']:<5} {r['batch']:>5} {r['precision']:>9} {r['images_per_s']:>9.1f} "
                  f"{r['step_s']:>7.3f} {r['gflop_per_image']:>10.2f} {r['model_tflops']:>14.3f} "
                  f"{r['peak_tflops']:>15.3f} {r['utilisation']:>11.1%}")
        ratio = rows[1]["utilisation"] / rows[0]["utilisation"]
        print(f"{size}: full-step utilisation / VL-only utilisation = {ratio:.0%}")
        if a.compile:
            eager, fast = rows[1], rows[2]
            print(f"{size}, all four objectives, the same train_step: eager {1 / eager['step_s']:.3f} steps/s, "
                  f"compiled ({a.compile}) {1 / fast['step_s']:.3f} steps/s after warm-up "
                  f"(x{eager['step_s'] / fast['step_s']:.2f}); compile time {fast['compile_s']:.1f} s")


if __name__ == "__main__":
    main()
