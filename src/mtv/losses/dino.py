"""DINO self-distillation on pooled tokens, and the teacher centring it shares with iBOT.

Centring keeps the teacher from collapsing onto one prototype. Sinkhorn–Knopp (DINOv2's default) balances the
prototypes within the batch; EMA centring (DINO's original) subtracts a running mean of the teacher logits.
Everything runs in fp32: the sharpened teacher softmax overflows fp16.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from mtv.ops.distributed import spans_ranks


def _all_reduce(t: torch.Tensor, group: dist.ProcessGroup | None, op=dist.ReduceOp.SUM) -> torch.Tensor:
    if spans_ranks(group):
        dist.all_reduce(t, op=op, group=group)
    return t


@torch.no_grad()
def sinkhorn_knopp(logits: torch.Tensor, temp: float, iters: int = 3, valid: torch.Tensor | None = None,
                   group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """(n, K) teacher logits -> (n, K) targets whose rows sum to 1 and whose prototypes carry equal mass over the
    batch of all ranks of ``group`` (None: this process alone). Only scale-free normalisations are used, so
    subtracting the global maximum (overflow guard) leaves the result unchanged; ranks may hold different n
    (iBOT's masked tokens), even 0. Rows where ``valid`` (n,) is False are padding: they take no mass and come
    out as zeros."""
    z = logits.float() / temp
    if valid is not None:
        z = torch.where(valid[:, None], z, float("-inf"))
    top = _all_reduce(z.amax() if z.numel() else z.new_tensor(float("-inf")), group, dist.ReduceOp.MAX)
    q = torch.exp(z - torch.where(torch.isfinite(top), top, 0.0))
    tiny = torch.finfo(q.dtype).tiny
    for _ in range(iters):
        q = q / _all_reduce(q.sum(0, keepdim=True), group).clamp_min(tiny)  # each prototype: equal mass
        q = q / q.sum(1, keepdim=True).clamp_min(tiny)  # each sample: a distribution
    return q


class TeacherCentering(nn.Module):
    """Turns teacher logits into targets; holds the running centre when ``mode="ema"`` (one instance per loss)."""

    def __init__(self, prototypes: int, mode: Literal["sinkhorn", "ema"] = "sinkhorn", momentum: float = 0.9,
                 iters: int = 3):
        super().__init__()
        self.mode, self.momentum, self.iters = mode, momentum, iters
        self.register_buffer("center", torch.zeros(prototypes))

    @torch.no_grad()
    def forward(self, logits: torch.Tensor, temp: float, valid: torch.Tensor | None = None,
                group: dist.ProcessGroup | None = None) -> torch.Tensor:
        """Targets of (n, K) ``logits``; rows where ``valid`` (n,) is False are padding and move no centre.
        ``group``: the ranks whose batches share one centre (None: this process)."""
        if self.mode == "sinkhorn":
            return sinkhorn_knopp(logits, temp, self.iters, valid, group)
        logits = logits.float()
        targets = F.softmax((logits - self.center) / temp, dim=-1)
        if valid is None:
            total, count = logits.sum(0), logits.new_tensor(float(logits.shape[0]))
        else:
            total, count = torch.where(valid[:, None], logits, 0.0).sum(0), valid.sum().float()
        total, count = _all_reduce(total, group), _all_reduce(count, group)
        # The centre moves only when some rank had rows; it is applied from the next step on, as in DINO.
        self.center.lerp_(total / count.clamp_min(1), (1 - self.momentum) * (count > 0).float())
        return targets


def dino_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor, student_temp: float = 0.1,
              shared_views: bool = True) -> torch.Tensor:
    """Cross-entropy H(teacher view t, student view s) averaged over the batch and over view pairs.

    ``student_logits`` (S, B, K) and ``teacher_probs`` (T, B, K) are view-major. With ``shared_views`` the first T
    student views are the teacher's views, and a view is never matched with itself (DINOv2); without it (SigLIP 2:
    student on local crops only) every pair counts. Dividing by the pair count keeps the scale independent of
    the number of crops."""
    with torch.autocast(student_logits.device.type, enabled=False):  # autocast would run the einsum in 16 bits
        log_p = F.log_softmax(student_logits.float() / student_temp, dim=-1)
        ce = -torch.einsum("tbk,sbk->ts", teacher_probs.float(), log_p) / student_logits.shape[1]
    keep = torch.ones_like(ce)
    if shared_views:
        keep -= torch.eye(*ce.shape, device=ce.device)
    return (ce * keep).sum() / keep.sum()
