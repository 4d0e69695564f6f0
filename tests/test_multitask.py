"""The multi-task step end to end: switches, missing labels, non-finite terms, the clean view, predict."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from fixtures import train_tree, write_toy_shards
from mtv.config import build_config
from mtv.data.batch import Batch
from mtv.data.schema import decode_depth, decode_json, sample_boxes
from mtv.data.shards import list_shards, read_samples
from mtv.data.views import ViewDecoder
from mtv.errors import MTVError
from mtv.export import export
from mtv.models.siglip import build_model, preset_config
from mtv.models.tokenizer import train_tokenizer
from mtv.objectives.multitask import MultiTask
from mtv.train import checkpoint, train
from mtv.train.logger import read_metrics


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return train_tokenizer(["a small red cube left of a blue ball"] * 4, str(tmp_path_factory.mktemp("tok")), 100, 16)


def test_switched_off_objectives_build_and_compute_nothing():
    off = {"enabled": False}
    cfg = build_config(train_tree("r", "d", ssl=off, grounding=off, depth=off))
    model = build_model(preset_config("micro", 100, 16, 0, 1))
    task = MultiTask(model, cfg)
    assert task.ssl is None and task.grounding is None and task.depth is None
    batch = Batch(pixel_values=torch.randn(4, 3, 32, 32), input_ids=torch.randint(0, 100, (4, 16)))
    terms = task(batch, task.plan(0, 10))
    assert list(terms) == ["loss_vl"]

    depth_only = build_config(train_tree("r", "d", vl=off, ssl=off, grounding=off))
    task = MultiTask(build_model(preset_config("micro", 100, 16, 0, 1)), depth_only)
    assert not any(p.requires_grad for p in task.model.text_model.parameters())


def test_world_sample_views_flip_everything_together(world, tokenizer):
    raw = next(iter(read_samples(list_shards(world))))
    meta = decode_json(raw)
    plain = ViewDecoder(tokenizer, 32, 16, flip=0.0, max_boxes=10, depth=True)(raw, np.random.default_rng(0))
    flipped = ViewDecoder(tokenizer, 32, 16, flip=1.0, max_boxes=10, depth=True)(raw, np.random.default_rng(0))
    assert plain.missing == ()
    plain, flipped = plain.fields, flipped.fields
    torch.testing.assert_close(flipped["pixel_values"], plain["pixel_values"].flip(-1))
    torch.testing.assert_close(flipped["depth"], plain["depth"].flip(-1), equal_nan=True)
    v = plain["box_valid"]
    expected = plain["boxes"][v][:, [2, 1, 0, 3]] * torch.tensor([-1, 1, -1, 1]) + torch.tensor([1, 0, 1, 0])
    torch.testing.assert_close(flipped["boxes"][v], expected)
    # metric depth becomes inverse depth; the sky is invalid
    metric = decode_depth(raw, meta["depth"], "depth.png")
    assert np.isnan(metric).any() == bool(torch.isnan(plain["depth"]).any())
    boxes, phrases = sample_boxes(meta, 0.0, 10)
    assert len(phrases) == int(v.sum()) and (boxes[:, 2] > boxes[:, 0]).all()


def test_the_clean_view_crop_carries_its_boxes_depth_and_phrases(world, tokenizer):
    """Checked against the crop done by hand on the stored image, with the window the decoder's generator draws
    after its flip draw; a box keeps its phrase exactly when at least half its area and 4 px a side survive."""
    from mtv.data.geometry import random_window, resize_depth
    from mtv.data.schema import decode_image, sample_inverse_depth
    from mtv.data.transforms import image_to_tensor
    from mtv.data.views import CROP_RATIO
    from mtv.losses.grounding import name_id

    decoder = ViewDecoder(tokenizer, 32, 16, flip=0.0, max_boxes=10, depth=True, crop_scale=(0.3, 0.6))
    for raw in list(read_samples(list_shards(world)))[:6]:
        meta, image = decode_json(raw), decode_image(raw)
        rng = np.random.default_rng(7)
        rng.random()  # the flip draw
        left, top, right, bottom = random_window(image.size, (0.3, 0.6), CROP_RATIO, rng)
        assert 0.25 <= (right - left) * (bottom - top) / (image.width * image.height) <= 0.65  # rounding to pixels
        got = decoder(raw, np.random.default_rng(7)).fields
        torch.testing.assert_close(got["pixel_values"], image_to_tensor(image.crop((left, top, right, bottom)), 32))
        inverse = sample_inverse_depth(raw, meta)[top:bottom, left:right]
        torch.testing.assert_close(got["depth"][0], torch.from_numpy(resize_depth(inverse, (32, 32))), equal_nan=True)
        boxes, phrases = sample_boxes(meta, 0.0, 10)
        x0, y0 = np.clip(boxes[:, 0], left, right), np.clip(boxes[:, 1], top, bottom)
        x1, y1 = np.clip(boxes[:, 2], left, right), np.clip(boxes[:, 3], top, bottom)
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        kept = ((x1 - x0) * (y1 - y0) >= 0.5 * area) & (x1 - x0 >= 4) & (y1 - y0 >= 4)
        v = got["box_valid"]
        assert got["phrases"][: int(v.sum())] == [p for p, k in zip(phrases, kept) if k]
        assert got["entity_ids"][v].tolist() == [name_id(p) for p, k in zip(phrases, kept) if k]
        size = np.array([right - left, bottom - top] * 2, np.float32)
        expected = np.stack([x0 - left, y0 - top, x1 - left, y1 - top], 1)[kept] / size
        torch.testing.assert_close(got["boxes"][v], torch.from_numpy(expected.astype(np.float32)))


def test_the_whole_image_crop_draws_nothing_and_a_bad_scale_names_the_key(world, tokenizer):
    raw = next(iter(read_samples(list_shards(world))))
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    ViewDecoder(tokenizer, 32, 16, max_boxes=10, depth=True)(raw, rng_a)
    rng_b.random()
    assert rng_a.random() == rng_b.random()  # one draw (the flip) and no more
    with pytest.raises(MTVError, match="data.crop_scale must satisfy 0 < low <= high <= 1"):
        build_config(train_tree("r", "d", data__crop_scale=[0.8, 0.5]))


def test_missing_labels_are_counted_per_objective(tmp_path):
    write_toy_shards(tmp_path / "toy", n_shards=2, per_shard=16)  # image-text only: no boxes, no depth
    summary = train(build_config(train_tree(tmp_path / "run", tmp_path / "toy", steps=2, optim={"warmup_steps": 1})), progress=False)
    assert summary["labels_missing"] == {"boxes": 16, "depth": 16}
    last = read_metrics(tmp_path / "run")[-1]
    assert last["labels_missing_boxes"] == 16 and {"loss_grounding", "loss_box", "loss_depth"} <= last.keys()
    assert last["loss_depth"] == 0 and np.isfinite(last["loss"])


def test_a_nonfinite_term_skips_the_update_then_stops_the_run(tmp_path, world, monkeypatch):
    tree = train_tree(tmp_path / "run", world, steps=8, ckpt_every=2, max_nonfinite_steps=1)
    real = MultiTask.forward
    calls = {"n": 0}

    def poisoned(self, *args, **kwargs):
        terms = real(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] > 3:
            terms["loss_depth"] = terms["loss_depth"] * float("nan")
        return terms

    monkeypatch.setattr(MultiTask, "forward", poisoned)
    with pytest.raises(MTVError, match=r"loss_depth was NaN/inf in 2 steps .*step_00000002\.pt"):
        train(build_config(tree), progress=False)
    state = checkpoint.load(checkpoint.latest(tmp_path / "run"))
    assert state["step"] == 2
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_world_run_exports_heads_that_predict_any_photo(tmp_path, world):
    train(build_config(train_tree(tmp_path / "run", world, steps=3, optim={"warmup_steps": 1})), progress=False)
    out = export(tmp_path / "run", tmp_path / "export")
    assert (out / "heads.safetensors").exists() and set(json.loads((out / "heads.json").read_text())) == {
        "grounding", "depth"}
    from skimage import data

    from mtv.predict import predict

    Image.fromarray(data.astronaut()[:300, :200]).save(tmp_path / "photo.png")
    result = predict(out, tmp_path / "photo.png", ["a red cube", "the sphere"], tmp_path / "pred")
    depth = np.asarray(Image.open(tmp_path / "pred" / "depth.png"))
    assert depth.shape == (300, 200) and depth.dtype == np.uint16 and depth.min() >= 1
    assert [b["phrase"] for b in result["boxes"]] == ["a red cube", "the sphere"]
    for b in result["boxes"]:
        x0, y0, x1, y1 = b["box"]
        assert 0 <= x0 <= x1 <= 200 and 0 <= y0 <= y1 <= 300
    assert (tmp_path / "pred" / "boxes.png").exists() and (tmp_path / "pred" / "depth_color.png").exists()
