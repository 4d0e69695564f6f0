"""Starting a run from an existing `SiglipModel` (``model.init``): Google's SigLIP, a fixed-resolution SigLIP 2
(Gemma tokenizer), the released MTV weights or one of our exports, with its own tokenizer, image processor and
logit scale and bias. ``model.init_skip`` regexes leave matching tensors as freshly initialised."""

from __future__ import annotations

import re
from collections.abc import Sequence

from transformers import SiglipConfig, SiglipModel

from mtv.errors import MTVError


def _reason(e: Exception) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def init_config(source: str) -> SiglipConfig:
    """The architecture of ``source`` (a directory, or a hub id where a hub is reachable)."""
    try:
        return SiglipConfig.from_pretrained(source)
    except (OSError, ValueError) as e:
        raise MTVError(f"model.init: {source} is neither a SiglipModel directory nor a reachable hub id "
                       f"({_reason(e)})") from None


def load_init(model: SiglipModel, source: str, skip: Sequence[str] = ()) -> list[str]:
    """Copies every tensor of ``source`` into ``model`` except those whose name matches a ``skip`` regex;
    returns the names left as initialised. The two must share an architecture (`init_config`)."""
    try:
        weights = SiglipModel.from_pretrained(source).state_dict()
    except (OSError, ValueError) as e:
        raise MTVError(f"model.init: cannot load the weights of {source} ({_reason(e)})") from None
    patterns = [re.compile(p) for p in skip]
    skipped = [k for k in weights if any(p.search(k) for p in patterns)]
    kept = {k: v for k, v in weights.items() if k not in set(skipped)}
    missing, unexpected = model.load_state_dict(kept, strict=False)
    if unexpected or set(missing) - set(skipped):
        raise MTVError(f"model.init: {source} does not match the model built from its own config "
                       f"(missing {sorted(set(missing) - set(skipped))[:3]}, unexpected {unexpected[:3]})")
    return skipped
