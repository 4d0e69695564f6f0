"""The SigLIP towers (HF `SiglipModel`), their size presets and the text tokenizer."""

from mtv.models.siglip import PRESETS, build_model, init_logit_params
from mtv.models.tokenizer import build_processor, load_processor, train_tokenizer

__all__ = ["PRESETS", "build_model", "init_logit_params", "build_processor", "load_processor", "train_tokenizer"]
