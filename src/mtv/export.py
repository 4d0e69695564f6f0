"""Checkpoint → a directory that `SiglipModel.from_pretrained` and `SiglipProcessor.from_pretrained` load."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from transformers import SiglipConfig, SiglipModel

from mtv import __version__
from mtv.config import TrainConfig
from mtv.errors import MTVError, writable_dir
from mtv.heads import save_heads
from mtv.objectives.base import registered
from mtv.progress import quiet_hf_bars
from mtv.train import checkpoint


def export(ckpt: str | os.PathLike, out: str | os.PathLike) -> Path:
    """``ckpt`` is a checkpoint file or a run directory (its newest checkpoint). The export is written beside
    ``out`` under a temporary name and renamed into place, so ``out`` is a whole export or untouched."""
    state = checkpoint.load(ckpt)
    out = Path(out)
    writable_dir(out.parent, "export", "--out")
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        model = SiglipModel(SiglipConfig.from_dict(state["model_config"]))
        model.load_state_dict(state["model"])
        with quiet_hf_bars():
            model.save_pretrained(tmp)
        save_heads(tmp, _heads(state, model))
        for name, data in state["processor_files"].items():
            (tmp / name).write_bytes(data)
        provenance = {"mtv_version": __version__, "checkpoint": str(ckpt), "step": state["step"],
                      "config": state["config"]}
        (tmp / "mtv_export.json").write_text(json.dumps(provenance, indent=2))
        _replace_dir(tmp, out)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise MTVError(f"{out}: cannot write the export ({e.strerror or e}); free space or choose another --out") \
            from None
    return out


def _replace_dir(new: Path, out: Path) -> None:
    """``new`` renamed to ``out``; an older export there is moved aside first and removed only afterwards."""
    old = out.with_name(f".{out.name}.old{os.getpid()}")
    if out.exists():
        os.replace(out, old)
    os.replace(new, out)
    shutil.rmtree(old, ignore_errors=True)


def _heads(state: dict, model: SiglipModel) -> dict:
    """The trained heads of the objectives marked ``exported`` (training-only parts such as SSL stay behind)."""
    cfg = TrainConfig.model_validate(state["config"])
    heads = {}
    for name, section in cfg.objective_configs().items():
        if section.enabled and registered()[name].exported:
            heads[name] = registered()[name].build(section, model)
            heads[name].load_state_dict(state["objectives"][name])
    return heads
