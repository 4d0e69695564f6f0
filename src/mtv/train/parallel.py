"""How the multi-task module is spread over ranks: one process, DDP (a replica per rank) or FSDP2 (each
transformer block's parameters, gradients and optimiser state sharded over the ranks), with optional activation
checkpointing per block.

Blocks are found by type, not by name: every `SiglipEncoder`'s layers, i.e. the student's image and text towers
and any tower an objective keeps (the SSL teacher), so this module never names an objective.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel
from transformers.models.siglip.modeling_siglip import SiglipEncoder

from mtv.train.distributed import Dist


def encoders(module: nn.Module) -> list[SiglipEncoder]:
    return [m for m in module.modules() if isinstance(m, SiglipEncoder)]


def checkpoint_blocks(module: nn.Module) -> None:
    """Each block of every tower that trains is recomputed in backward instead of keeping its activations
    (towers without trainable parameters, such as the EMA teacher, keep no activations anyway). The wrapper's
    state-dict hooks keep parameter names as they were, so checkpoints and exports do not change."""
    for encoder in encoders(module):
        if any(p.requires_grad for p in encoder.parameters()):
            for i, block in enumerate(encoder.layers):
                encoder.layers[i] = checkpoint_wrapper(block)


def shard(module: nn.Module, param_dtype: torch.dtype | None) -> None:
    """FSDP2 in place: every block its own unit (gathered just before it runs, freed after), then the root with
    the rest (embeddings, heads, objectives' own parameters). ``param_dtype`` is the dtype blocks compute in
    (None: the parameters' own); gradients are reduced in fp32. Batches keep their dtypes (depth targets stay
    fp32): autocast, not the policy, casts activations."""
    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32, cast_forward_inputs=False)
    for encoder in encoders(module):
        for block in encoder.layers:
            fully_shard(block, mp_policy=policy)
    fully_shard(module, mp_policy=policy)


def distribute(task: nn.Module, parallel: str, d: Dist, param_dtype: torch.dtype | None,
               find_unused: bool) -> nn.Module:
    """The module a step calls: ``task`` itself on one process, its DDP wrapper, or ``task`` sharded in place
    under ``parallel="fsdp"`` (build the optimiser after this: sharding replaces the parameters)."""
    if parallel == "fsdp":
        shard(task, param_dtype)
        return task
    if d.world_size > 1:
        return DistributedDataParallel(task, find_unused_parameters=find_unused, broadcast_buffers=False)
    return task


@contextlib.contextmanager
def gradient_sync(net: nn.Module, sync: bool) -> Iterator[None]:
    """Inside, backward reduces gradients over ranks only if ``sync``: micro-steps before the last accumulate
    locally (DDP's ``no_sync``, FSDP2's ``set_requires_gradient_sync``)."""
    if sync:
        yield
    elif isinstance(net, DistributedDataParallel):
        with net.no_sync():
            yield
    elif isinstance(net, FSDPModule):
        net.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            net.set_requires_gradient_sync(True)
    else:
        yield


def whole(tensor: torch.Tensor) -> torch.Tensor:
    """The full value of a tensor that may be sharded (a DTensor under FSDP); a collective for DTensors, so every
    rank must call it."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def is_sharded(module: nn.Module) -> bool:
    return isinstance(module, FSDPModule)
