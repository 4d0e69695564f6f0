"""Training throughput and FLOP utilisation of one step, per model size: the image–text (VL-only) step against
the full multi-task step (VL + SSL + grounding + depth), on this machine.

    python benchmarks/bench_train.py [--sizes tiny base] [--steps 3] [--precision auto]

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
from mtv.train.precision import autocast_dtype

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


def step_fn(size: str, objectives: str, precision: str):
    tree = {"run_dir": "unused", "data": {"train": "unused"}, "steps": 1000, "batch_size": BATCH[size],
            "model": {"preset": size, "text_length": TEXT}, **(OFF if objectives == "vl" else {})}
    cfg = build_config(tree)
    model = build_model(preset_config(size, vocab_size=VOCAB, text_length=TEXT, pad_id=0, eos_id=1))
    task = MultiTask(model, cfg)
    opt = torch.optim.AdamW([p for p in task.parameters() if p.requires_grad], lr=1e-4)
    batch, plan = synthetic_batch(cfg, task, model.config.vision_config, BATCH[size], torch.Generator().manual_seed(0))
    dtype = autocast_dtype(precision, torch.device("cpu"))

    def step():
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            loss = sum(task(batch, plan).values())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        task.after_step(plan)

    return step, BATCH[size], dtype


def measure(size: str, objectives: str, steps: int, precision: str, peak: dict) -> dict:
    step, batch, dtype = step_fn(size, objectives, precision)
    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sec = (time.perf_counter() - start) / steps
    if dtype not in peak:
        peak[dtype] = matmul_flops(dtype)
    return {"size": size, "objectives": objectives, "batch": batch,
            "precision": str(dtype or "fp32").replace("torch.", ""), "images_per_s": batch / sec,
            "gflop_per_image": flops / batch / 1e9, "model_tflops": flops / sec / 1e12,
            "peak_tflops": peak[dtype] / 1e12, "utilisation": flops / sec / peak[dtype]}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", nargs="+", default=["tiny", "base"])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    a = p.parse_args()
    print(machine())
    print(f"{'size':<6} {'step':<5} {'batch':>5} {'precision':>9} {'images/s':>9} {'GFLOP/img':>10} "
          f"{'model TFLOP/s':>14} {'matmul TFLOP/s':>15} {'utilisation':>11}")
    peak: dict = {}
    for size in a.sizes:
        rows = [measure(size, objectives, a.steps, a.precision, peak) for objectives in ("vl", "all")]
        for r in rows:
            print(f"{r['size']:<6} {r['objectives']:<5} {r['batch']:>5} {r['precision']:>9} {r['images_per_s']:>9.1f} "
                  f"{r['gflop_per_image']:>10.2f} {r['model_tflops']:>14.3f} {r['peak_tflops']:>15.3f} "
                  f"{r['utilisation']:>11.1%}")
        print(f"{size}: full-step utilisation / VL-only utilisation = {rows[1]['utilisation'] / rows[0]['utilisation']:.0%}")


if __name__ == "__main__":
    main()
