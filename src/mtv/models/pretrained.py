"""Starting a run from an existing `SiglipModel` (``model.init``): Google's SigLIP, a fixed-resolution SigLIP 2
(Gemma tokenizer), the released MTV weights or one of our exports, with its own tokenizer, image processor and
logit scale and bias. ``model.init_skip`` regexes leave matching tensors as freshly initialised; another
``model.image_size`` resamples the position embeddings."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from transformers import SiglipConfig, SiglipModel

from mtv.errors import MTVError
from mtv.progress import quiet_hf_bars


def _reason(e: Exception) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


POSITIONS = "vision_model.embeddings.position_embedding.weight"


def init_config(source: str, image_size: int | None = None) -> SiglipConfig:
    """The architecture of ``source`` (a directory, or a hub id where a hub is reachable), at ``image_size``
    when given (`load_init` then interpolates the position embeddings)."""
    try:
        config = SiglipConfig.from_pretrained(source)
    except (OSError, ValueError) as e:
        raise MTVError(f"model.init: {source} is neither a SiglipModel directory nor a reachable hub id "
                       f"({_reason(e)})") from None
    if image_size is not None:
        config.vision_config.image_size = image_size
    return config


def resize_positions(table: torch.Tensor, grid: int) -> torch.Tensor:
    """A square (n², D) position table resampled to (grid², D), bicubic as DINOv2 and HF SigLIP interpolate."""
    side, dim = math.isqrt(table.shape[0]), table.shape[1]
    square = table.float().reshape(1, side, side, dim).permute(0, 3, 1, 2)
    out = F.interpolate(square, size=(grid, grid), mode="bicubic", align_corners=False)
    return out.permute(0, 2, 3, 1).reshape(grid * grid, dim).to(table.dtype)


def load_init(model: SiglipModel, source: str, skip: Sequence[str] = ()) -> list[str]:
    """Copies every tensor of ``source`` into ``model`` except those whose name matches a ``skip`` regex (the
    position table is resampled when ``model`` has another resolution); returns the names left as initialised.
    The two must share an architecture (`init_config`)."""
    try:
        with quiet_hf_bars():
            weights = SiglipModel.from_pretrained(source).state_dict()
    except (OSError, ValueError) as e:
        raise MTVError(f"model.init: cannot load the weights of {source} ({_reason(e)})") from None
    target = model.state_dict()[POSITIONS]
    if weights[POSITIONS].shape != target.shape:
        weights[POSITIONS] = resize_positions(weights[POSITIONS], math.isqrt(target.shape[0]))
    patterns = [re.compile(p) for p in skip]
    if unmatched := [p.pattern for p in patterns if not any(p.search(k) for k in weights)]:
        raise MTVError(f"model.init_skip: {', '.join(map(repr, unmatched))} matches no tensor of {source} (names "
                       f"look like {next(iter(weights))!r}); fix or remove it")
    skipped = [k for k in weights if any(p.search(k) for p in patterns)]
    kept = {k: v for k, v in weights.items() if k not in set(skipped)}
    missing, unexpected = model.load_state_dict(kept, strict=False)
    if unexpected or set(missing) - set(skipped):
        raise MTVError(f"model.init: {source} does not match the model built from its own config "
                       f"(missing {sorted(set(missing) - set(skipped))[:3]}, unexpected {unexpected[:3]})")
    return skipped
