"""SigLIP model construction from a size preset or any HF `SiglipConfig`."""

from __future__ import annotations

import json
import logging
import math
import os
import re

import torch
from transformers import SiglipConfig, SiglipModel

from mtv.errors import MTVError
from mtv.progress import quiet_hf_bars


class _DefaultTextConfigWarning(logging.Filter):
    """transformers builds its default SiglipTextConfig (vocabulary 32000, bos/eos ids 49406/49407, out of that
    vocabulary) to diff every SigLIP config it loads or saves, and warns about that default's ids, not ours
    (ours fit their vocabulary: bos None, eos and pad inside it). Only that warning is dropped."""

    DEFAULT = re.compile(r"(bos|eos)_token_id must be .* \(between 0 and 31999\), got 4940[67]\.")

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.DEFAULT.search(record.getMessage())


logging.getLogger("transformers.configuration_utils").addFilter(_DefaultTextConfigWarning())

# Towers of matching width; `tiny` trains in minutes on a 2-core CPU, `base`/`large` are the paper's sizes.
PRESETS: dict[str, dict] = {
    "micro": dict(image_size=32, patch_size=8, hidden=32, mlp=64, layers=2, heads=2, text_layers=1),  # tests, smoke runs
    "tiny": dict(image_size=64, patch_size=8, hidden=192, mlp=768, layers=6, heads=3, text_layers=4),
    "small": dict(image_size=128, patch_size=16, hidden=384, mlp=1536, layers=12, heads=6, text_layers=12),
    "base": dict(image_size=224, patch_size=16, hidden=768, mlp=3072, layers=12, heads=12, text_layers=12),
    "large": dict(image_size=256, patch_size=16, hidden=1024, mlp=4096, layers=24, heads=16, text_layers=24),
}


def preset_config(name: str, vocab_size: int, text_length: int, pad_id: int, eos_id: int) -> SiglipConfig:
    if name not in PRESETS:
        raise MTVError(f"model.preset: unknown preset {name!r}; choose one of {', '.join(PRESETS)} or give model.config")
    p = PRESETS[name]
    text = dict(vocab_size=vocab_size, hidden_size=p["hidden"], intermediate_size=p["mlp"],
                num_hidden_layers=p["text_layers"], num_attention_heads=p["heads"],
                max_position_embeddings=text_length, pad_token_id=pad_id, eos_token_id=eos_id, bos_token_id=None)
    vision = dict(image_size=p["image_size"], patch_size=p["patch_size"], hidden_size=p["hidden"],
                  intermediate_size=p["mlp"], num_hidden_layers=p["layers"], num_attention_heads=p["heads"])
    return SiglipConfig(text_config=text, vision_config=vision)


def load_config(path: str) -> SiglipConfig:
    """An HF SigLIP config from a directory or a config.json."""
    try:
        return SiglipConfig.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise MTVError(f"model.config: {path} is not a SigLIP config ({str(e).splitlines()[0]})") from None


def init_logit_params(model: SiglipModel, scale: float, bias: float) -> None:
    """SigLIP starts t' = log(scale) and b = bias (log 10, -10); HF initialises both to 0."""
    with torch.no_grad():
        model.logit_scale.fill_(math.log(scale))
        model.logit_bias.fill_(bias)


def build_model(config: SiglipConfig, init_scale: float = 10.0, init_bias: float = -10.0, seed: int = 0) -> SiglipModel:
    torch.manual_seed(seed)
    model = SiglipModel(config)
    init_logit_params(model, init_scale, init_bias)
    return model


def load_siglip(path: str | os.PathLike) -> SiglipModel:
    """A `SiglipModel` from a directory, with a one-line error when it is not one."""
    path = str(path)
    cfg = os.path.join(path, "config.json")
    if not os.path.isfile(cfg):
        raise MTVError(f"{path}: not a model directory (no config.json); give the directory `mtv export` wrote")
    try:
        with open(cfg) as f:
            kind = json.load(f).get("model_type")
    except (OSError, ValueError, AttributeError):
        kind = None
    if kind != "siglip":
        raise MTVError(f"{cfg}: not a SiglipModel config (model_type {kind!r}); give a SigLIP model directory")
    try:
        with quiet_hf_bars():
            return SiglipModel.from_pretrained(path)
    except Exception as e:  # HF raises many types for a broken checkpoint; the user needs one line, not a trace
        raise MTVError(f"{path}: not a loadable SiglipModel ({type(e).__name__}: {str(e).splitlines()[0]})") from None
