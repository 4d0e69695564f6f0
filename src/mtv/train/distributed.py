"""Process group set-up from torchrun's environment; a single process needs none of it."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from mtv.errors import MTVError


@dataclass(frozen=True)
class Dist:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def group(self) -> dist.ProcessGroup | None:
        """The group the losses gather over: every rank, or None on one process."""
        return dist.group.WORLD if dist.is_initialized() else None

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()


def setup(device: str = "auto", parallel: str = "ddp") -> Dist:
    """Joins the torchrun process group (gloo on CPU, NCCL on GPU) when WORLD_SIZE > 1, or always under FSDP,
    whose sharded parameters live on a device mesh even on one rank."""
    if parallel == "fsdp" and "WORLD_SIZE" not in os.environ:
        raise MTVError("parallel: fsdp needs the processes torchrun starts (WORLD_SIZE is unset); launch with "
                       "`torchrun --nproc_per_node N -m mtv.cli train ...` or set parallel: ddp")
    world = int(os.environ.get("WORLD_SIZE", 1))
    rank, local = int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    dev = torch.device("cuda", local) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if (world > 1 or parallel == "fsdp") and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return Dist(rank, world, local, dev)


def teardown(drain: bool = True) -> None:
    """Leaves the process group. ``drain`` first waits for every rank: under gloo, a rank that closes its sockets
    while a peer's last collective is still in flight aborts the peer ("terminate called without an active
    exception"). A rank that is failing skips the wait, which its peers might never join."""
    if dist.is_initialized():
        if drain and dist.get_world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()


def mean_over_ranks(value: float, d: Dist) -> float:
    if d.world_size == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=d.device)
    dist.all_reduce(t)
    return t.item() / d.world_size


def gather_objects(obj, d: Dist) -> list:
    if d.world_size == 1:
        return [obj]
    out = [None] * d.world_size
    dist.all_gather_object(out, obj)
    return out
