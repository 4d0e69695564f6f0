"""Collectives that carry gradients back to the rank that owns each row (for losses over the global batch).

Every one takes its process group explicitly: the losses run on the group the engine hands them (the whole world
today, a sub-group on a device mesh later), never on whatever default happens to be initialised."""

from __future__ import annotations

import torch
import torch.distributed as dist


class _AllGather(torch.autograd.Function):
    """All ranks' tensors concatenated in rank order. Backward sums the gradient over ranks and keeps the own
    rows, with an all-reduce because every backend has one.
    (``torch.distributed.nn.functional.all_gather`` does the same job but is deprecated in torch 2.13.)"""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
        ctx.rank, ctx.rows, ctx.group = dist.get_rank(group), tensor.shape[0], group
        gathered = [torch.empty_like(tensor) for _ in range(dist.get_world_size(group))]
        dist.all_gather(gathered, tensor.contiguous(), group=group)
        return torch.cat(gathered)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad, group=ctx.group)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows], None


def all_gather_with_grad(tensor: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
    """(group size × rows, ...) from every rank's equally sized (rows, ...) tensor, differentiable."""
    return _AllGather.apply(tensor, group)


def spans_ranks(group: dist.ProcessGroup | None) -> bool:
    """Whether a loss given ``group`` must talk to other ranks: None, or a group of one, means it runs alone."""
    return group is not None and dist.get_world_size(group) > 1
