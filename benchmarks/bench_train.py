"""Training throughput and FLOP utilisation of the image–text step, per model size, on this machine.

    python benchmarks/bench_train.py [--sizes tiny base] [--steps 3] [--precision auto]

FLOP utilisation = (model FLOPs per step, counted by torch's FlopCounterMode) × steps/s ÷ the machine's
matmul FLOP/s in the same precision, measured in the same run. Inputs are synthetic tensors, so data loading
is not measured here.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from common import machine, matmul_flops
from mtv.models.siglip import build_model, preset_config
from mtv.objectives import VisionLanguage
from mtv.train.precision import autocast_dtype

BATCH = {"micro": 64, "tiny": 64, "small": 16, "base": 8, "large": 4}


def step_fn(size: str, precision: str):
    model = build_model(preset_config(size, vocab_size=1000, text_length=64, pad_id=0, eos_id=1))
    task = VisionLanguage(model)
    opt = torch.optim.AdamW(task.parameters(), lr=1e-4)
    res, b = model.config.vision_config.image_size, BATCH[size]
    px, ids = torch.randn(b, 3, res, res), torch.randint(0, 1000, (b, 64))
    dtype = autocast_dtype(precision, torch.device("cpu"))

    def step():
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            loss = sum(task(px, ids).values())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step, b, dtype


def measure(size: str, steps: int, precision: str) -> dict:
    step, batch, dtype = step_fn(size, precision)
    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sec = (time.perf_counter() - start) / steps
    peak = matmul_flops(dtype)
    return {"size": size, "batch": batch, "precision": str(dtype or "fp32").replace("torch.", ""),
            "images_per_s": batch / sec, "model_tflops": flops / sec / 1e12, "peak_tflops": peak / 1e12,
            "utilisation": flops / sec / peak}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", nargs="+", default=["tiny", "base"])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    a = p.parse_args()
    print(machine())
    print(f"{'size':<6} {'batch':>5} {'precision':>9} {'images/s':>9} {'model TFLOP/s':>14} "
          f"{'matmul TFLOP/s':>15} {'utilisation':>11}")
    for size in a.sizes:
        r = measure(size, a.steps, a.precision)
        print(f"{r['size']:<6} {r['batch']:>5} {r['precision']:>9} {r['images_per_s']:>9.1f} "
              f"{r['model_tflops']:>14.3f} {r['peak_tflops']:>15.3f} {r['utilisation']:>11.1%}")


if __name__ == "__main__":
    main()
