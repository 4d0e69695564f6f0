"""One optimiser step, the only place a step happens: the step's lr and weight decay, forward, the terms,
backward, clipping, the optimiser and the objectives' after-step updates (EMA teacher, clamps). The loop and `benchmarks/` both call it.

The terms stay on the device, summed over micro-steps in float64 (so that a logged value equals the sum of the
micro-steps' values as Python would form it); the caller reads them back only at log steps. The one read-back per
micro-step is a single flag: whether any term is NaN/inf on any rank, which decides whether the update happens.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import nn

from mtv.data.batch import Batch
from mtv.errors import MTVError
from mtv.objectives.multitask import MultiTask
from mtv.train.distributed import Dist
from mtv.train.parallel import gradient_sync, whole
from mtv.train.schedule import StepSchedule


@dataclass
class Engine:
    """What a step reads and updates. ``net`` is ``task``, its DDP wrapper or ``task`` sharded by FSDP2
    (`mtv.train.parallel.distribute`); ``forward`` is ``net`` or ``torch.compile(net)``."""

    task: MultiTask
    net: nn.Module
    forward: Callable[[Batch, dict], dict[str, torch.Tensor]]
    opt: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    autocast_dtype: torch.dtype | None
    accum_steps: int
    grad_clip: float
    dist: Dist


@dataclass
class StepResult:
    """``terms``: each term's mean over the micro-steps, on the device (empty when the update was skipped);
    ``grad_norm`` before clipping; ``bad``: the NaN/inf terms that made this step skip its update."""

    terms: dict[str, torch.Tensor]
    grad_norm: torch.Tensor | None
    bad: list[str]


def compiled(net: nn.Module, backend: str) -> Callable:
    """``torch.compile(net)``, checked on a tiny function first so that a missing compiler is one line, not a
    trace in the middle of the first step."""
    try:
        torch.compile(lambda x: x * 2 + 1, backend=backend)(torch.zeros(2))
    except Exception as e:  # torch raises many types when no backend or C++ compiler is available
        raise MTVError(f"compile: torch.compile with backend {backend!r} cannot run here ({type(e).__name__}: "
                       f"{str(e).splitlines()[0] if str(e) else ''}); set compile: false or another "
                       "compile_backend") from None
    return torch.compile(net, backend=backend)


@contextmanager
def compile_failures_said(backend: str, autocast_dtype: torch.dtype | None) -> Iterator[None]:
    """A compiler that passes `compiled`'s check but fails on the step's own graphs, which it builds in the first
    step's forward and backward, is one line too: e.g. torch 2.13's inductor emits C++ that does not compile for
    some bf16 reductions on AVX-512 CPUs without AMX."""
    from torch._dynamo.exc import BackendCompilerFailed
    from torch._inductor.exc import InductorError

    try:
        yield
    except (BackendCompilerFailed, InductorError) as e:
        first = next((line for line in str(e).splitlines() if line.strip()), "")
        fixes = "set compile: false, compile_backend: aot_eager" + (", or precision: fp32" if autocast_dtype else "")
        raise MTVError(f"compile: torch.compile with backend {backend!r} could not build the training step on this "
                       f"machine ({type(e).__name__}: {first}); {fixes}") from None


def train_step(engine: Engine, next_batch: Callable[[int], Batch], row: StepSchedule) -> StepResult:
    """One optimiser step over ``engine.accum_steps`` micro-batches, ``next_batch(micro)`` each (fetched only when
    needed, so a skipped step consumes what it read and no more). ``row`` is the schedule table's row of the step."""
    e, d, plan = engine, engine.dist, row.plan
    row.apply(e.opt)
    e.task.before_step(plan)
    autocast = torch.autocast(d.device.type, dtype=e.autocast_dtype, enabled=e.autocast_dtype is not None)
    sums: dict[str, torch.Tensor] = {}
    for micro in range(e.accum_steps):
        batch = next_batch(micro)
        last = micro == e.accum_steps - 1
        with gradient_sync(e.net, last or d.world_size == 1):
            with autocast:
                terms = e.forward(batch, plan)
            bad = nonfinite_terms(terms, d)
            if bad:
                e.opt.zero_grad(set_to_none=True)
                return StepResult({}, None, bad)
            e.scaler.scale(sum(terms.values()) / e.accum_steps).backward()
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + v.detach().double() / e.accum_steps
    e.scaler.unscale_(e.opt)
    params = [p for p in e.task.parameters() if p.grad is not None]  # DTensors under FSDP: norms span the shards
    grad_norm = whole(torch.nn.utils.clip_grad_norm_(params, e.grad_clip) if e.grad_clip
                      else torch.nn.utils.get_total_norm([p.grad for p in params]))
    e.scaler.step(e.opt)
    e.scaler.update()
    e.opt.zero_grad(set_to_none=True)
    e.task.after_step(plan)
    return StepResult(sums, grad_norm, [])


def nonfinite_terms(terms: dict[str, torch.Tensor], d: Dist) -> list[str]:
    """Names of NaN/inf terms on any rank (all ranks must agree to skip, or DDP would hang); one read-back."""
    flags = torch.stack([~torch.isfinite(v.detach()).all() for v in terms.values()]).float()
    if d.world_size > 1:
        torch.distributed.all_reduce(flags)
    return [k for k, f in zip(terms, flags.tolist()) if f]
