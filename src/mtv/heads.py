"""The trained heads an export carries beside its `SiglipModel` (``heads.safetensors`` + ``heads.json``): every
objective marked ``exported`` (grounding and depth among the built-ins), so that `mtv predict` and the evaluation
suite can use them; plain SigLIP loaders ignore both files."""

from __future__ import annotations

import json
import os
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import SiglipModel

from mtv.errors import MTVError
from mtv.objectives.base import registered

WEIGHTS, CONFIG = "heads.safetensors", "heads.json"


def save_heads(out: str | os.PathLike, heads: dict[str, nn.Module]) -> None:
    if not heads:
        return
    out = Path(out)
    tensors = {f"{name}.{k}": v.detach().contiguous() for name, m in heads.items() for k, v in m.state_dict().items()}
    save_file(tensors, out / WEIGHTS)
    (out / CONFIG).write_text(json.dumps({name: m.cfg.model_dump(mode="json") for name, m in heads.items()}, indent=2))


def load_heads(model_dir: str | os.PathLike, model: SiglipModel) -> dict[str, nn.Module]:
    """The exported heads (possibly none) rebuilt around ``model``'s sizes, in eval mode."""
    folder = Path(model_dir)
    if not (folder / CONFIG).exists():
        return {}
    try:
        configs, tensors = json.loads((folder / CONFIG).read_text()), load_file(folder / WEIGHTS)
    except (OSError, ValueError, SafetensorError) as e:
        raise MTVError(f"{folder}: {CONFIG} and {WEIGHTS} are not readable together ({str(e).splitlines()[0]}); "
                       "re-export the checkpoint") from None
    known, heads = registered(), {}
    for name, cfg in configs.items():
        if name not in known:
            raise MTVError(f"{folder / CONFIG}: has a {name!r} head but no objective of that name is registered; "
                           "install or import the plug-in that defines it")
        head = known[name].build(known[name].Config.model_validate(cfg), model)
        own = {k[len(name) + 1:]: v for k, v in tensors.items() if k.startswith(name + ".")}
        try:
            head.load_state_dict(own)
        except RuntimeError as e:
            raise MTVError(f"{folder / WEIGHTS}: the {name} head does not fit this model "
                           f"({str(e).splitlines()[0]}); re-export the checkpoint") from None
        heads[name] = head.eval()
    return heads
