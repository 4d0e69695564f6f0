"""What every benchmark prints first (machine and versions), and the machine's own matmul FLOP/s."""

from __future__ import annotations

import os
import platform
import time

import torch


def machine() -> str:
    import numpy
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"machine: {cpu}, {os.cpu_count()} logical cores, torch threads {torch.get_num_threads()}, "
            f"cuda {torch.cuda.is_available()}\n"
            f"versions: python {platform.python_version()}, torch {torch.__version__}, "
            f"transformers {transformers.__version__}, numpy {numpy.__version__}")


def matmul_flops(dtype: torch.dtype | None, n: int = 2048, seconds: float = 2.0) -> float:
    """Sustained FLOP/s of square matmuls in ``dtype`` (None: fp32) — the denominator of FLOP utilisation."""
    dtype = dtype or torch.float32
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        reps += 1
    return 2 * n**3 * reps / (time.perf_counter() - start)
