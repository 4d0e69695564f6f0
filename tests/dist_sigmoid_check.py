"""Run by torchrun from tests/test_sigmoid_loss.py: checks that the multi-rank sigmoid loss, with gradients
averaged over ranks as DDP does, equals the single-process loss on the concatenated global batch.

Every rank builds the same global batch and the same small projections (fixed seed), embeds only its own
slice, and backprops its per-rank loss. Compared with the single-process run on the whole batch:
- loss: mean over ranks of the per-rank losses;
- parameter gradients (projections, t', b): all-reduce mean over ranks, what DDP applies;
- feature gradients: each rank's gradient for its own image and text rows, divided by the world size
  (the single-process loss is the mean of the per-rank ones), so received texts must have sent their
  gradients back to the owning rank.
Each mode runs unchunked and chunked. Everything is float64 so equality is tight. Without a group the loss is
the local one, process group or not.
Usage: torchrun --nproc_per_node W dist_sigmoid_check.py [mode ...]"""

from __future__ import annotations

import argparse
import math
import os

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

from mtv.losses import distributed_sigmoid_loss, sigmoid_loss

B, IN, D = 4, 6, 5


class Towers(nn.Module):
    def __init__(self):
        super().__init__()
        self.image, self.text = nn.Linear(IN, D), nn.Linear(IN, D)
        self.log_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        self.bias = nn.Parameter(torch.tensor(-3.0))

    def forward(self, images, texts, loss_fn):
        x = F.normalize(self.image(images), dim=-1)
        y = F.normalize(self.text(texts), dim=-1)
        x.retain_grad(), y.retain_grad()
        return loss_fn(x, y, self.log_scale.exp(), self.bias), x, y


def check(mode: str, chunk_size: int | None, rank: int, world: int) -> None:
    torch.manual_seed(0)
    model = Towers().double()
    images, texts = torch.randn(world * B, IN, dtype=torch.float64), torch.randn(world * B, IN, dtype=torch.float64)
    rows = slice(rank * B, (rank + 1) * B)

    local, x, y = model(images[rows], texts[rows],
                        lambda *a: distributed_sigmoid_loss(*a, mode=mode, chunk_size=chunk_size,
                                                                     group=dist.group.WORLD))
    local.backward()
    mean_loss = local.detach().clone()
    dist.all_reduce(mean_loss)
    mean_loss /= world
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    for g in grads.values():
        dist.all_reduce(g)
        g /= world

    model.zero_grad()
    full, gx, gy = model(images, texts, sigmoid_loss)
    full.backward()

    where = f"[{mode}, chunk {chunk_size}, rank {rank}/{world}]"
    assert_close(mean_loss, full.detach(), msg=lambda m: f"{where} loss differs: {m}")
    for name, p in model.named_parameters():
        assert_close(grads[name], p.grad, msg=lambda m: f"{where} grad of {name} differs: {m}")
    assert_close(x.grad / world, gx.grad[rows], msg=lambda m: f"{where} image feature grad differs: {m}")
    assert_close(y.grad / world, gy.grad[rows], msg=lambda m: f"{where} text feature grad differs: {m}")


def check_without_group(rank: int) -> None:
    """``group=None`` is one process even where a process group is initialised: every rank gets its own
    local loss, and no collective is entered (ranks hold different data, so a gather would change the value)."""
    torch.manual_seed(rank)
    x = F.normalize(torch.randn(B, D, dtype=torch.float64), dim=-1)
    y = F.normalize(torch.randn(B, D, dtype=torch.float64), dim=-1)
    for mode in ("ring", "gather"):
        assert_close(distributed_sigmoid_loss(x, y, 10.0, -3.0, mode=mode), sigmoid_loss(x, y, 10.0, -3.0),
                     msg=lambda m: f"[{mode}, group None, rank {rank}] not the local loss: {m}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("modes", nargs="*", default=["ring", "gather"])
    args = parser.parse_args()
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    for mode in args.modes:
        for chunk_size in (None, 3):
            check(mode, chunk_size, rank, world)
            if rank == 0:
                print(f"OK {mode}: world {world}, chunk {chunk_size}: mean per-rank loss and DDP-averaged "
                      "gradients equal the single-process loss on the global batch", flush=True)
    check_without_group(rank)
    dist.barrier()
    os._exit(0)  # skip the interpreter teardown, in which gloo can abort a finished rank


if __name__ == "__main__":
    main()
