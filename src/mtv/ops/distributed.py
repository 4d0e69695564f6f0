"""Collectives that carry gradients back to the rank that owns each row (for losses over the global batch)."""

from __future__ import annotations

import torch
import torch.distributed as dist


class _AllGather(torch.autograd.Function):
    """All ranks' tensors concatenated in rank order. Backward sums the gradient over ranks and keeps the own
    rows, with an all-reduce because every backend has one.
    (``torch.distributed.nn.functional.all_gather`` does the same job but is deprecated in torch 2.13.)"""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.rows = dist.get_rank(), tensor.shape[0]
        gathered = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, tensor.contiguous())
        return torch.cat(gathered)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """(world × rows, ...) from every rank's equally sized (rows, ...) tensor, differentiable."""
    return _AllGather.apply(tensor)
