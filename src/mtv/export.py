"""Checkpoint → a directory that `SiglipModel.from_pretrained` and `SiglipProcessor.from_pretrained` load."""

from __future__ import annotations

import json
import os
from pathlib import Path

from transformers import SiglipConfig, SiglipModel

from mtv import __version__
from mtv.config import TrainConfig
from mtv.errors import writable_dir
from mtv.heads import build_heads, save_heads
from mtv.train import checkpoint


def export(ckpt: str | os.PathLike, out: str | os.PathLike) -> Path:
    """``ckpt`` is a checkpoint file or a run directory (its newest checkpoint)."""
    state = checkpoint.load(ckpt)
    out = Path(out)
    writable_dir(out, "export", "--out")
    model = SiglipModel(SiglipConfig.from_dict(state["model_config"]))
    model.load_state_dict(state["model"])
    model.save_pretrained(out)
    save_heads(out, _heads(state, model))
    for name, data in state["processor_files"].items():
        (out / name).write_bytes(data)
    provenance = {"mtv_version": __version__, "checkpoint": str(ckpt), "step": state["step"], "config": state["config"]}
    (out / "mtv_export.json").write_text(json.dumps(provenance, indent=2))
    return out


def _heads(state: dict, model: SiglipModel) -> dict:
    """The trained grounding and depth heads (the SSL parts are training-only and stay behind)."""
    cfg = TrainConfig.model_validate(state["config"])
    heads = build_heads(model, cfg.grounding if cfg.grounding.enabled else None,
                        cfg.depth if cfg.depth.enabled else None)
    for name, head in heads.items():
        head.load_state_dict(state["objectives"][name])
    return heads
