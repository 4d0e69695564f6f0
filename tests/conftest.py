"""Shared pytest fixtures. Each is named for what it builds; builders themselves live in fixtures.py."""

from __future__ import annotations

import json

import pytest

from fixtures import TOY_CLASSES, TOY_COLOURS, TOY_SHAPES, write_toy_shards
from mtv.data.shards import DATASET_META

EVAL_TEMPLATES = ["a photo of a {}.", "a rendering of a {}."]


@pytest.fixture(scope="session", autouse=True)
def mtv_cache(tmp_path_factory):
    """Untrained floors are cached under $MTV_CACHE: one per test session, never the user's."""
    import os

    path = tmp_path_factory.mktemp("mtv_cache")
    old, os.environ["MTV_CACHE"] = os.environ.get("MTV_CACHE"), str(path)
    yield path
    if old is None:
        del os.environ["MTV_CACHE"]
    else:
        os.environ["MTV_CACHE"] = old


@pytest.fixture(scope="session")
def eval_model_dir(tmp_path_factory):
    """A random `micro` SiglipModel + processor saved like an export, trained tokenizer included (~1 s).
    Imports are local so test files that need no model do not pay for transformers."""
    from mtv.models.siglip import build_model, preset_config
    from mtv.models.tokenizer import build_processor, train_tokenizer

    path = tmp_path_factory.mktemp("eval_model")
    captions = [f"a photo of a {c} {s}" for c in TOY_COLOURS for s in TOY_SHAPES]
    tok = train_tokenizer(captions, str(path), vocab_size=200, text_length=64)
    model = build_model(preset_config("micro", len(tok), 64, tok.pad_token_id, tok.eos_token_id))
    model.save_pretrained(path)
    build_processor(tok, model.config.vision_config.image_size).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def eval_shards(tmp_path_factory):
    """24 held-out samples in 2 shards, 8 classes, two templates; sample 3 has an undecodable PNG and
    sample 10 an empty caption, so 22 are usable."""
    path = tmp_path_factory.mktemp("eval_data")
    write_toy_shards(path, n_shards=2, per_shard=12, seed=1, corrupt={3: "image", 10: "caption"})
    (path / DATASET_META).write_text(json.dumps({"classes": TOY_CLASSES, "templates": EVAL_TEMPLATES}))
    return path


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """48 MTV World scenes at 32 px (the micro model's size) in 4 shards: boxes and depth for all four objectives."""
    from mtv.world import generate_world

    out = tmp_path_factory.mktemp("world")
    generate_world(out, 48, seed=3, size=32, shard_size=12, progress=False)
    return out


@pytest.fixture(scope="session")
def world_eval_splits(tmp_path_factory):
    """Two tiny MTV World splits at 32 px (the micro model's size): 24 scenes to train probes, 16 held out."""
    from mtv.world import generate_world

    root = tmp_path_factory.mktemp("world_eval")
    generate_world(root / "train", 24, seed=0, size=32, shard_size=12, progress=False)
    generate_world(root / "val", 16, seed=1, size=32, shard_size=16, progress=False)
    return root / "train", root / "val"


@pytest.fixture(scope="session")
def eval_model_with_heads(eval_model_dir, tmp_path_factory):
    """`eval_model_dir` plus random MTV depth and grounding heads saved like an export's."""
    import shutil

    from mtv.heads import save_heads
    from mtv.models.siglip import load_siglip
    from mtv.objectives.depth import Depth, DepthConfig
    from mtv.objectives.grounding import Grounding, GroundingConfig

    path = tmp_path_factory.mktemp("eval_model_heads") / "model"
    shutil.copytree(eval_model_dir, path)
    model = load_siglip(path)
    vision, text = model.config.vision_config, model.config.text_config
    save_heads(path, {"depth": Depth(DepthConfig(), vision.hidden_size, vision.num_hidden_layers),
                      "grounding": Grounding(GroundingConfig(), vision.hidden_size,
                                             text.projection_size or text.hidden_size)})
    return path
