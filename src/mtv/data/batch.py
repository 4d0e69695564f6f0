"""The typed batch one training step reads: the collated views and labels, plus what the host adds per step."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import torch

from mtv.data.transforms import tokenize


@dataclass
class Batch:
    """Fields of objectives that are off stay None. Shapes: B images, M box slots, U distinct phrases, L tokens."""

    pixel_values: torch.Tensor  # (B, 3, S, S) the clean view
    input_ids: torch.Tensor  # (B, L) caption tokens
    global2: torch.Tensor | None = None  # (B, 3, S, S) SSL's second global view
    locals: torch.Tensor | None = None  # (B, n_local, 3, s, s) SSL's local crops
    masks: torch.Tensor | None = None  # (2B, N) bool, student patches replaced by the mask token
    boxes: torch.Tensor | None = None  # (B, M, 4) normalised xyxy
    box_valid: torch.Tensor | None = None  # (B, M) bool
    entity_ids: torch.Tensor | None = None  # (B, M) int64 phrase identities
    phrase_ids: torch.Tensor | None = None  # (U, L) the batch's distinct box phrases, tokenised
    phrase_index: torch.Tensor | None = None  # (B, M) each box slot's row of phrase_ids
    depth: torch.Tensor | None = None  # (B, 1, S, S) inverse depth, NaN where invalid
    depth_valid: torch.Tensor | None = None  # (B,) bool
    extra: dict[str, torch.Tensor] = field(default_factory=dict)  # plug-in objectives' own sample fields

    @classmethod
    def from_collated(cls, collated: dict, tokenizer, text_length: int) -> "Batch":
        """From `ShardStream`'s collated dict: known fields by name, the rest in ``extra``; box phrases are
        deduplicated across the batch and tokenised once, so the text tower embeds each distinct phrase once."""
        collated = dict(collated)
        phrases = collated.pop("phrases", None)
        known = {f.name for f in fields(cls)} - {"extra"}
        batch = cls(**{k: v for k, v in collated.items() if k in known},
                    extra={k: v for k, v in collated.items() if k not in known})
        distinct = sorted({p for row in phrases or () for p in row if p})
        if distinct:
            where = {p: i for i, p in enumerate(distinct)}
            batch.phrase_index = torch.tensor([[where.get(p, 0) for p in row] for row in phrases])
            batch.phrase_ids = torch.stack([tokenize(tokenizer, p, text_length) for p in distinct])
        return batch

    def to(self, device: torch.device) -> "Batch":
        moved = {f.name: v.to(device, non_blocking=True) for f in fields(self)
                 if isinstance(v := getattr(self, f.name), torch.Tensor)}
        return replace(self, **moved, extra={k: v.to(device, non_blocking=True) for k, v in self.extra.items()})

    @property
    def size(self) -> int:
        return self.pixel_values.shape[0]
