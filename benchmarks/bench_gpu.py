"""GPU throughput of the full four-objective step: ViT-B/16 at 224 px, bf16, compiled, on every visible GPU, under
DDP and under FSDP2.

    python benchmarks/bench_gpu.py [--steps 20] [--warmup 3] [--batch 32] [--parallel ddp fsdp] [--backend inductor]
    make bench-gpu

It launches one `torchrun --standalone --nproc_per_node <GPUs>` per parallel mode, each running this file with
``--worker``, and times `mtv.train.step.train_step` (the step `mtv train` runs) on synthetic batches of the shapes
the loader gives (benchmarks/bench_train.py's). It prints per mode: images/s over all GPUs; model-FLOP
utilisation, i.e. the FLOPs of one eager step as torch's FlopCounterMode counts them (forward and backward of
every tower, head and loss; attention's backward as torch counts its flash kernels, scores recomputed) × steps/s ÷ the GPU's dense bf16 peak from `PEAK_BF16`
(a GPU not in the table gets no utilisation, and says so); the peak memory of the busiest rank. Beside the step's
consumption it prints the data pipeline's images/s per CPU core: the training decoder of all four objectives on
MTV World shards at 224 px, in one process. Without CUDA it prints one line and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

# Dense bf16 tensor-core peaks (FLOP/s, no sparsity) from NVIDIA's data sheets, matched against
# torch.cuda.get_device_name in this order (PCIe before the SXM name it contains).
PEAK_BF16 = (("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("GH200", 989e12), ("A100", 312e12),
             ("L40S", 362e12), ("A10G", 70e12), ("L4", 121e12))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=20, help="timed steps, after the warm-up")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation, allocator)")
    p.add_argument("--batch", type=int, default=32, help="images per GPU and step")
    p.add_argument("--size", default="base", help="model preset (base: ViT-B/16)")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--parallel", nargs="+", default=["ddp", "fsdp"], choices=["ddp", "fsdp"])
    p.add_argument("--backend", default="inductor", help="torch.compile backend; 'none' runs eager")
    p.add_argument("--data-scenes", type=int, default=64, help="MTV World scenes the data pipeline is timed on")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.steps < 1 or a.warmup < 1 or a.batch < 1:
        p.error("--steps, --warmup and --batch must be at least 1")
    return a


def bf16_peak(device_name: str) -> float | None:
    return next((peak for key, peak in PEAK_BF16 if key in device_name), None)


def _cpu_attention(query, key, value, *args, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _cpu_attention_backward(grad_out, query, key, value, *args, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


# torch's counter knows the CUDA attention kernels but not the CPU one, which it would count as 0
CPU_ATTENTION = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention,
                 torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_attention_backward}


def step_flops(step: Callable[[], object]) -> int:
    """FLOPs of one call of ``step`` (matrix products, convolutions and attention, forward and backward), on
    any device."""
    with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION) as counter:
        step()
    return counter.get_total_flops()


def bench_config(args: argparse.Namespace, parallel: str):
    from mtv.config import build_config

    return build_config({"run_dir": "unused", "data": {"train": "unused"}, "steps": 1000, "batch_size": args.batch,
                         "parallel": parallel, "precision": "bf16", "compile": args.backend != "none",
                         "model": {"preset": args.size, "image_size": args.image_size, "text_length": 64}})


def worker(args: argparse.Namespace, parallel: str) -> None:
    """One rank: the loop's engine parts around `train_step`, an eager step counted, then compiled steps timed."""
    from bench_train import VOCAB, synthetic_batch
    from mtv.models.siglip import build_model, preset_config
    from mtv.objectives.multitask import MultiTask
    from mtv.train.distributed import setup, teardown
    from mtv.train.optim import build_optimizer
    from mtv.train.parallel import distribute
    from mtv.train.schedule import ScheduleTable
    from mtv.train.step import Engine, compiled, train_step

    cfg = bench_config(args, parallel)
    d = setup("cuda", parallel)
    model_cfg = preset_config(args.size, vocab_size=VOCAB, text_length=64, pad_id=0, eos_id=1)
    model_cfg.vision_config.image_size = args.image_size
    task = MultiTask(build_model(model_cfg, seed=0), cfg, d.group).to(d.device)
    net = distribute(task, parallel, d, torch.bfloat16, find_unused=False)
    opt, rules = build_optimizer(task, cfg)
    row = ScheduleTable(cfg, task, rules, cfg.optim.lr).row(cfg.optim.warmup_steps)
    batch, _ = synthetic_batch(cfg, task, model_cfg.vision_config, args.batch,
                                  torch.Generator().manual_seed(d.rank))
    batch = batch.to(d.device)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    parts = (opt, scaler, torch.bfloat16, 1, cfg.optim.grad_clip, d)
    eager = Engine(task, net, net, *parts)
    flops = step_flops(lambda: train_step(eager, lambda micro: batch, row))
    engine = Engine(task, net, compiled(net, args.backend) if cfg.compile else net, *parts)
    for _ in range(args.warmup):
        train_step(engine, lambda micro: batch, row)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.steps):
        train_step(engine, lambda micro: batch, row)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    memory = torch.tensor([torch.cuda.max_memory_allocated()], device=d.device, dtype=torch.float64)
    if d.world_size > 1:
        torch.distributed.all_reduce(memory, op=torch.distributed.ReduceOp.MAX)
    if d.main:
        print(json.dumps({"parallel": parallel, "gpus": d.world_size, "device": torch.cuda.get_device_name(),
                          "images_per_s": args.batch * d.world_size * args.steps / seconds,
                          "step_s": seconds / args.steps, "flops_per_gpu_step": flops,
                          "peak_memory_gib": memory.item() / 2**30}), flush=True)
    teardown()


def data_images_per_core(args: argparse.Namespace) -> float:
    """Images/s of the training decoder (all four objectives' views, crops, masks' inputs, labels) in this one
    process, on MTV World scenes rendered at the benchmark's resolution."""
    from mtv.data.shards import list_shards
    from mtv.data.stream import ShardStream, StreamState
    from mtv.models.siglip import preset_config
    from mtv.models.tokenizer import build_processor, train_tokenizer
    from mtv.train.loop import _captions, _decoder
    from mtv.world import generate_world

    cfg = bench_config(args, "ddp")
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        generate_world(Path(tmp) / "world", args.data_scenes, seed=0, size=args.image_size,
                       shard_size=args.data_scenes, progress=False)
        shards = list_shards(str(Path(tmp) / "world"))
        tok = train_tokenizer(_captions(shards, 1000), str(Path(tmp) / "tok"), 500, 64)
        processor = build_processor(tok, args.image_size)
        vision = preset_config(args.size, len(tok), 64, tok.pad_token_id, tok.eos_token_id).vision_config
        vision.image_size = args.image_size
        stream = ShardStream(shards, _decoder(cfg, processor, vision), 8, 0, 0, 1, 16, StreamState({}))
        start, images = time.perf_counter(), 0
        for batch in stream:
            images += len(batch.fields["input_ids"])
            if images >= args.data_scenes - 8:
                break
        return images / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        worker(args, args.parallel[0])
        return 0
    if not torch.cuda.is_available():
        print("bench_gpu: no CUDA device on this machine; nothing measured (run it where NVIDIA GPUs are visible)")
        return 0
    from common import machine

    gpus = torch.cuda.device_count()
    print(machine())
    name = torch.cuda.get_device_name()
    peak = bf16_peak(name)
    print(f"{gpus} x {name}; dense bf16 peak " + (f"{peak / 1e12:.0f} TFLOP/s" if peak else
                                                   "unknown for this GPU (not in PEAK_BF16): no utilisation"))
    data = data_images_per_core(args)
    here = Path(__file__).resolve()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here.parent), os.environ.get("PYTHONPATH", "")])}
    print(f"{'parallel':<8} {'GPUs':>4} {'batch/GPU':>9} {'images/s':>9} {'step s':>7} {'TFLOP/GPU-step':>14} "
          f"{'MFU':>6} {'peak GiB':>8} {'data cores needed':>17}")
    for parallel in args.parallel:
        out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}",
                              str(here), "--worker", "--parallel", parallel, "--steps", str(args.steps),
                              "--warmup", str(args.warmup), "--batch", str(args.batch), "--size", args.size,
                              "--image-size", str(args.image_size), "--backend", args.backend],
                             env=env, capture_output=True, text=True)
        if out.returncode:
            print(f"{parallel}: the run failed (exit {out.returncode}): {out.stderr.strip().splitlines()[-1:]}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        mfu = f"{r['flops_per_gpu_step'] / r['step_s'] / peak:.1%}" if peak else "n/a"
        print(f"{parallel:<8} {r['gpus']:>4} {args.batch:>9} {r['images_per_s']:>9.1f} {r['step_s']:>7.3f} "
              f"{r['flops_per_gpu_step'] / 1e12:>14.2f} {mfu:>6} {r['peak_memory_gib']:>8.1f} "
              f"{r['images_per_s'] / data:>17.1f}")
    print(f"data pipeline: {data:.1f} images/s per CPU core ({os.cpu_count()} logical cores here); 'data cores "
          "needed' = the step's images/s / that")
    return 0


if __name__ == "__main__":
    sys.exit(main())
