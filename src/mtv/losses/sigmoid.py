"""SigLIP's pairwise sigmoid loss, single-process and across ranks.

Every (image, text) pair is an independent binary problem, so the loss over a global batch is a plain sum of
per-block sums. That is what lets ranks compute it block by block ("ring") without anyone holding the global
N x N logits, or from a differentiable all-gather of the texts ("gather", simpler, N x D text memory per rank).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from mtv.ops.distributed import all_gather_with_grad, spans_ranks

MODES = ("ring", "gather")


class _ChunkedSoftplusSum(torch.autograd.Function):
    """Σ_ij softplus(t·x_i·y_j + b), row chunk by row chunk. Backward recomputes each chunk's logits rather
    than saving them, so peak memory is chunk_size x M instead of B x M in both passes. Hand-written rather
    than `torch.utils.checkpoint`, whose non-reentrant form pulls in torch._dynamo and, under a gloo process
    group, made about half the processes abort at exit on torch 2.13 CPU."""

    @staticmethod
    def forward(ctx, image, text, scale, bias, chunk_size: int):
        ctx.save_for_backward(image, text, scale, bias)
        ctx.chunk_size = chunk_size
        return sum(F.softplus(scale * rows @ text.T + bias).sum() for rows in image.split(chunk_size))

    @staticmethod
    def backward(ctx, grad):
        image, text, scale, bias = ctx.saved_tensors
        grad_image, grad_text = [], torch.zeros_like(text)
        grad_scale, grad_bias = torch.zeros_like(scale), torch.zeros_like(bias)
        for rows in image.split(ctx.chunk_size):
            cosine = rows @ text.T
            p = torch.sigmoid(scale * cosine + bias)  # d softplus(l) / dl
            grad_image.append(scale * p @ text)
            grad_text += scale * p.T @ rows
            grad_scale += (p * cosine).sum()
            grad_bias += p.sum()
        return grad * torch.cat(grad_image), grad * grad_text, grad * grad_scale, grad * grad_bias, None


def _pair_loss_sum(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor,
                   negative_only: bool, chunk_size: int | None) -> torch.Tensor:
    """Σ_ij −log σ(z_ij · logit_ij), the diagonal positive unless ``negative_only``.

    Unchunked it is one logsigmoid over the B x M logits. Chunked it uses −log σ(−l) = softplus(l) and
    −log σ(l) = softplus(l) − l: softplus summed over all pairs minus the positive logits, which needs no
    label matrix and splits over rows."""
    if chunk_size is None or chunk_size >= image.shape[0]:
        logits = scale * image @ text.T + bias
        z = -torch.ones_like(logits)
        if not negative_only:
            z.diagonal().fill_(1.0)
        return -F.logsigmoid(z * logits).sum()
    total = _ChunkedSoftplusSum.apply(image, text, scale, bias, chunk_size)
    if not negative_only:
        total = total - (scale * (image * text).sum(-1) + bias).sum()
    return total


def sigmoid_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor | float,
                 logit_bias: torch.Tensor | float, negative_only: bool = False,
                 chunk_size: int | None = None) -> torch.Tensor:
    """−(1/B) Σ_i Σ_j log σ(z_ij (t·x_i·y_j + b)), z_ij = +1 on the diagonal, −1 elsewhere.

    ``image_features`` (B, D) and ``text_features`` (M, D) are L2-normalised; ``logit_scale`` is t = exp(t′),
    already exponentiated. With ``negative_only`` every pair is a negative: a block of texts from another rank.
    The divisor is the number of image rows B whatever M is, so block losses over the same images add up to the
    loss over all their columns. Computed in at least fp32: it sums B x M terms spanning many orders of
    magnitude, which half precision rounds away. ``chunk_size`` bounds memory at large batch (same value)."""
    if not negative_only and image_features.shape[0] != text_features.shape[0]:
        raise ValueError(f"positives need as many texts as images, got {text_features.shape[0]} texts for "
                         f"{image_features.shape[0]} images")
    dtype = torch.promote_types(image_features.dtype, torch.float32)
    image, text = image_features.to(dtype), text_features.to(dtype)
    scale = torch.as_tensor(logit_scale, device=image.device).to(dtype)
    bias = torch.as_tensor(logit_bias, device=image.device).to(dtype)
    return _pair_loss_sum(image, text, scale, bias, negative_only, chunk_size) / image.shape[0]


def _exchange(tensor: torch.Tensor, send_to: int, recv_from: int, group: dist.ProcessGroup) -> torch.Tensor:
    """``send_to``/``recv_from`` are ranks within ``group``."""
    received = torch.empty_like(tensor)
    ops = [dist.P2POp(dist.isend, tensor, group_peer=send_to, group=group),
           dist.P2POp(dist.irecv, received, group_peer=recv_from, group=group)]
    for request in dist.batch_isend_irecv(ops):
        request.wait()
    return received


class _RingShift(torch.autograd.Function):
    """Sends ``tensor`` to the next rank and returns the previous rank's. Backward runs the same exchange the
    other way, so the gradient a rank computes for a received block reaches the rank that owns those texts."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, send_to: int, recv_from: int, group: dist.ProcessGroup) -> torch.Tensor:
        ctx.send_to, ctx.recv_from, ctx.group = send_to, recv_from, group
        return _exchange(tensor.contiguous(), send_to, recv_from, group)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return _exchange(grad.contiguous(), ctx.recv_from, ctx.send_to, ctx.group), None, None, None


def distributed_sigmoid_loss(image_features: torch.Tensor, text_features: torch.Tensor,
                             logit_scale: torch.Tensor | float, logit_bias: torch.Tensor | float,
                             mode: str = "ring", chunk_size: int | None = None,
                             group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """Sigmoid loss of the local images against the texts of every rank of ``group``, divided by the local batch
    size B.

    Positives are on the local B x B block; every other rank's texts are negatives only. There is no division
    by the world size: DDP averages gradients over ranks, and the mean of the per-rank losses is exactly the
    single-process loss on the global batch, so the averaged gradient is that loss's gradient too. Every rank
    must call this each step with the same B (both modes are collectives of equal-sized tensors).

    ``mode="ring"`` passes texts round the ranks in W − 1 neighbour exchanges, holding one B x D block and one
    B x B logit block at a time; ``mode="gather"`` all-gathers the texts (W·B x D) in one collective.
    With ``group`` None (a single process), or a group of one rank, this is `sigmoid_loss`."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    loss = sigmoid_loss(image_features, text_features, logit_scale, logit_bias, chunk_size=chunk_size)
    if not spans_ranks(group):
        return loss
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    if mode == "gather":
        texts = all_gather_with_grad(text_features, group)
        b = text_features.shape[0]
        others = torch.cat([texts[:rank * b], texts[(rank + 1) * b:]])
        return loss + sigmoid_loss(image_features, others, logit_scale, logit_bias, negative_only=True,
                                   chunk_size=chunk_size)
    received = text_features
    for _ in range(world - 1):
        received = _RingShift.apply(received, (rank + 1) % world, (rank - 1) % world, group)
        loss = loss + sigmoid_loss(image_features, received, logit_scale, logit_bias, negative_only=True,
                                   chunk_size=chunk_size)
    return loss
