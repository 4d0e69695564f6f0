"""Grounding losses: region-text sigmoid alignment across ranks, and L1 + GIoU box regression."""

from __future__ import annotations

import hashlib
import re

import torch
import torch.distributed as dist
import torch.nn.functional as F

from mtv.ops.boxes import cxcywh_to_xyxy, generalized_box_iou, paired
from mtv.ops.distributed import all_gather_with_grad, spans_ranks


def normalise_phrase(phrase: str) -> str:
    """Lower case, single spaces, no surrounding punctuation: "The  Dog." and "the dog" name one entity."""
    return re.sub(r"\s+", " ", phrase.lower()).strip(" \t\n.,;:!?\"'")


def name_id(phrase: str) -> int:
    """A stable signed 64-bit id of the normalised phrase, equal on every rank and in every run (Python's
    ``hash`` of a string is salted per process, so it cannot be used)."""
    digest = hashlib.blake2b(normalise_phrase(phrase).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def _gather(entities: torch.Tensor, ids: torch.Tensor, valid: torch.Tensor, group: dist.ProcessGroup
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Entities, ids and validity of every rank, in rank order. Ranks hold different numbers of boxes, so each pads to the
    largest count first; the gather of embeddings is differentiable, so each rank's loss sends gradients back to
    the rank that owns the entity."""
    world = dist.get_world_size(group)
    count = torch.tensor([entities.shape[0]], device=entities.device)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count, group=group)
    counts = [int(c) for c in counts]
    most = max(counts)
    if most == 0:
        return entities, ids, valid
    if torch.is_grad_enabled() and not entities.requires_grad:
        # the gather's backward is a collective too: a rank whose entities carry no grad would skip it and hang
        # the others
        entities = entities.detach().requires_grad_()
    pad = most - entities.shape[0]
    all_entities = all_gather_with_grad(F.pad(entities, (0, 0, 0, pad)), group).split(most)
    all_ids = [torch.zeros(most, dtype=ids.dtype, device=ids.device) for _ in range(world)]
    dist.all_gather(all_ids, F.pad(ids, (0, pad)), group=group)
    all_valid = [torch.zeros(most, dtype=torch.uint8, device=valid.device) for _ in range(world)]
    dist.all_gather(all_valid, F.pad(valid.to(torch.uint8), (0, pad)), group=group)  # gloo has no bool collectives
    return (torch.cat([e[:c] for e, c in zip(all_entities, counts)]),
            torch.cat([i[:c] for i, c in zip(all_ids, counts)]),
            torch.cat([v[:c] for v, c in zip(all_valid, counts)]).bool())


def region_text_loss(regions: torch.Tensor, entities: torch.Tensor, ids: torch.Tensor, scale: torch.Tensor,
                     bias: torch.Tensor, group: dist.ProcessGroup | None = None,
                     valid: torch.Tensor | None = None) -> torch.Tensor:
    """Sigmoid loss over all (region, entity) pairs of the global batch, divided by the local region count.

    ``regions`` and ``entities`` are (Q, E) L2-normalised, row q of each from the same box; ``ids`` (Q,) int64
    name ids; ``valid`` (Q,) bool marks the rows that are boxes (default: all), so that a fixed-shape batch of
    box slots needs no boolean indexing: padded rows take part in no pair and in no count. A pair is positive
    (z = +1) when the names are equal, so two boxes of "dog" are not pushed apart.
    With a ``group`` of several ranks, entities come from all of them; every rank must call this on every step,
    even with Q = 0, because the gather is a collective. As in objective 1, there is no division
    by the world size: DDP's gradient averaging does it."""
    valid = torch.ones_like(ids, dtype=torch.bool) if valid is None else valid.bool()
    if spans_ranks(group):
        entities, all_ids, all_valid = _gather(entities, ids, valid, group)
    else:
        all_ids, all_valid = ids, valid
    logits = scale * regions.float() @ entities.float().T + bias
    z = torch.where(ids[:, None] == all_ids[None, :], 1.0, -1.0)
    pairs = valid[:, None] & all_valid[None, :]
    return -torch.where(pairs, F.logsigmoid(z * logits), 0.0).sum() / valid.sum().clamp_min(1)


def box_loss(pred: torch.Tensor, target: torch.Tensor, l1_weight: float = 5.0,
             giou_weight: float = 2.0, valid: torch.Tensor | None = None) -> torch.Tensor:
    """DETR's box loss on (Q, 4) normalised cx, cy, w, h boxes, averaged over the ``valid`` (Q,) rows (default:
    all): ``l1_weight`` x L1 summed over the 4 coordinates + ``giou_weight`` x (1 - GIoU). L1 alone favours large
    boxes being slightly off over small ones being far off; GIoU is scale-free and still has a gradient for
    disjoint boxes. Padded rows get a stand-in target, so that whatever they hold, no NaN reaches the gradient."""
    pred, target = pred.float(), target.float()
    valid = torch.ones(pred.shape[0], dtype=torch.bool, device=pred.device) if valid is None else valid.bool()
    target = torch.where(valid[:, None], target, target.new_tensor([0.5, 0.5, 1.0, 1.0]))
    l1 = (pred - target).abs().sum(-1)
    giou = paired(generalized_box_iou, cxcywh_to_xyxy(pred), cxcywh_to_xyxy(target))
    per_box = torch.where(valid, l1_weight * l1 + giou_weight * (1 - giou), 0.0)
    return per_box.sum() / valid.sum().clamp_min(1)
