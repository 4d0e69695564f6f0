"""The grounding and depth heads an export carries beside its `SiglipModel` (``heads.safetensors`` +
``heads.json``), so that `mtv predict` and the evaluation suite can use them; plain SigLIP loaders ignore both."""

from __future__ import annotations

import json
import os
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import SiglipModel

from mtv.errors import MTVError
from mtv.objectives.depth import Depth, DepthConfig
from mtv.objectives.grounding import Grounding, GroundingConfig

WEIGHTS, CONFIG = "heads.safetensors", "heads.json"


def text_dim(model: SiglipModel) -> int:
    """Width of the text tower's pooled embedding, which grounding aligns regions with."""
    return model.config.text_config.projection_size or model.config.text_config.hidden_size


def build_heads(model: SiglipModel, grounding: GroundingConfig | None = None,
                depth: DepthConfig | None = None) -> dict[str, nn.Module]:
    """The grounding and depth heads sized for ``model``'s towers (one of each config given)."""
    vision = model.config.vision_config
    heads: dict[str, nn.Module] = {}
    if grounding is not None:
        heads["grounding"] = Grounding(grounding, vision.hidden_size, text_dim(model))
    if depth is not None:
        heads["depth"] = Depth(depth, vision.hidden_size, vision.num_hidden_layers)
    return heads


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
    heads = build_heads(model, grounding=GroundingConfig(**configs["grounding"]) if "grounding" in configs else None,
                        depth=DepthConfig(**configs["depth"]) if "depth" in configs else None)
    for name, head in heads.items():
        own = {k[len(name) + 1:]: v for k, v in tensors.items() if k.startswith(name + ".")}
        try:
            head.load_state_dict(own)
        except RuntimeError as e:
            raise MTVError(f"{folder / WEIGHTS}: the {name} head does not fit this model "
                           f"({str(e).splitlines()[0]}); re-export the checkpoint") from None
        head.eval()
    return heads


def require(heads: dict[str, nn.Module], name: str, model_dir) -> nn.Module:
    if name not in heads:
        raise MTVError(f"{model_dir}: has no {name} head (a plain SigLIP, or trained with {name}.enabled: false)")
    return heads[name]
