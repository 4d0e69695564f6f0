"""`mtv label`: geometry against stand-in experts with known output, the whole command with tiny random
Depth Anything / OWLv2 models on real photographs, the MTV World oracle, bad input, and kill-and-resume."""

import argparse
import errno
import io
import json
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from mtv.data.schema import decode_depth, encode_inverse_depth, encode_json, encode_png
from mtv.data.shards import ShardWriter, read_samples, shard_name
from mtv.errors import MTVError
from mtv.experts import (BoxFilter, DepthAnything, OracleConfig, Owlv2Boxes, label_shards,
                         licence, load_expert)
from mtv.experts.boxes import save_tiny_owlv2, tiny_owlv2_processor
from mtv.experts.command import add_parser
from mtv.experts.depth import save_tiny_depth_anything
from mtv.experts.run import report_path, summarise

CPU = torch.device("cpu")


# ---------------------------------------------------------------- tiny experts and data


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("experts")
    return SimpleNamespace(depth=save_tiny_depth_anything(root / "depth"), boxes=save_tiny_owlv2(root / "owl"))


def jpeg(array) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def photos():
    import skimage.data as data

    grey = data.camera()  # a greyscale JPEG
    return [(data.astronaut(), "an astronaut holding a helmet next to a flag"),
            (data.chelsea(), "a cat sitting on a wooden table"), (data.coffee(), "a cup of coffee on a saucer"),
            (data.rocket()[:, 100:380], "a rocket on the launch pad"),  # portrait
            (grey, "a man with a camera on a tripod in a field")]


def write_photo_shards(folder, n_shards=2, defects=True):
    """Photos as img2dataset writes them (jpg + txt + json), and in the first shard one of each defect."""
    folder.mkdir(parents=True, exist_ok=True)
    keys = []
    for s in range(n_shards):
        with ShardWriter(folder / shard_name(s)) as w:
            for i, (image, caption) in enumerate(photos()):
                key = f"{s:03d}{i:03d}"
                w.write({"__key__": key, "jpg": jpeg(image), "txt": caption.encode(),
                         "json": encode_json({"url": f"http://example.com/{key}.jpg", "width": image.shape[1]})})
                keys.append(key)
            if defects and s == 0:
                good = jpeg(photos()[0][0])
                w.write({"__key__": "bad_jpeg", "jpg": good[:300], "txt": b"a truncated photo"})
                w.write({"__key__": "empty_txt", "jpg": good, "txt": b"   "})
                w.write({"__key__": "no_txt", "jpg": good})
                w.write({"__key__": "tiny_img", "jpg": jpeg(np.zeros((8, 40, 3), np.uint8)), "txt": b"a dot"})
                keys += ["bad_jpeg", "empty_txt", "no_txt", "tiny_img"]
    return keys


def write_world_like_shards(folder, n_shards=2, per_shard=3, size=48):
    """What MTV World writes (png, txt, json with objects and metric depth, depth.png), with known truth."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for s in range(n_shards):
        with ShardWriter(folder / shard_name(s)) as w:
            for i in range(per_shard):
                image = np.full((size, size, 3), 90, np.uint8)
                x0, y0 = (int(v) for v in rng.integers(2, size // 2, 2))
                image[y0:y0 + 12, x0:x0 + 16] = (220, 30, 30)
                z = np.linspace(2.0, 6.0, size)[:, None].repeat(size, 1)
                z[:4] = 0  # invalid (sky)
                objects = [{"phrase": "large red cube", "box": [x0, y0, x0 + 16, y0 + 12], "visible_pixels": 192},
                           {"phrase": "small green cone", "box": None, "visible_pixels": 0}]
                meta = {"objects": objects, "depth": {"type": "metric", "scale": 0.001, "shift": 0.0}}
                w.write({"__key__": f"w{s}{i:03d}", "png": encode_png(image), "txt": b"a large red cube",
                         "json": encode_json(meta), "depth.png": encode_png(np.rint(z / 0.001).astype(np.uint16)),
                         "seg.png": encode_png(np.zeros((size, size), np.uint8))})


def samples(folder):
    return {s["__key__"]: s for s in read_samples(sorted(str(p) for p in folder.glob("*.tar")))}


def tar_bytes(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.tar"))}


def run_cli(argv):
    parser = argparse.ArgumentParser(prog="mtv")
    add_parser(parser.add_subparsers(dest="verb", required=True))
    args = parser.parse_args(argv)
    args.fn(args)


# ---------------------------------------------------------------- geometry against stand-ins with known output


class RedChannel(torch.nn.Module):
    """A depth "expert" whose inverse depth is the input's red channel (in [0, 1]), predicted at half the input
    resolution: after the wrapper's resize back, the depth map must equal the original image's red channel."""

    def __init__(self, mean, std):
        super().__init__()
        self.mean, self.std = mean[0], std[0]

    def forward(self, pixel_values):
        red = pixel_values[:, :1] * self.std + self.mean
        return SimpleNamespace(predicted_depth=torch.nn.functional.avg_pool2d(red, 2)[:, 0])


def test_depth_lands_on_the_original_pixels():
    from transformers import DPTImageProcessorPil

    processor = DPTImageProcessorPil(size={"height": 112, "width": 112}, keep_aspect_ratio=True, ensure_multiple_of=14)
    expert = DepthAnything(RedChannel(processor.image_mean, processor.image_std), processor, CPU, None, {})
    images = []
    for h, w, axis in [(90, 150, 1), (150, 90, 0), (91, 152, 1)]:  # landscape, portrait, landscape again
        ramp = np.linspace(0, 255, (h, w)[axis])
        red = np.broadcast_to(ramp[None, :] if axis else ramp[:, None], (h, w))
        images.append(np.stack([red, np.zeros((h, w)), np.zeros((h, w))], -1).astype(np.uint8))
    payloads = [expert.prep({}, Image.fromarray(a), "", {}) for a in images]
    assert len({tuple(p["pixel_values"].shape) for p in payloads}) == 2  # two shapes: the batch is grouped
    for image, depth in zip(images, expert.label(payloads)):
        assert depth.shape == image.shape[:2]
        assert np.abs(depth - image[..., 0] / 255).mean() < 0.01


class RedRectangleDetector(Owlv2Boxes):
    """An OWLv2 stand-in that "detects" the red rectangle in the processed (padded, resized) square for every
    query of the image, plus a confident box in the square's bottom-right corner — padding for any non-square
    image, so it must be dropped."""

    def scores_and_boxes(self, pixels, queries, mask):
        proc = self.prep.image_processor
        rgb = pixels * torch.tensor(proc.image_std)[:, None, None] + torch.tensor(proc.image_mean)[:, None, None]
        side = pixels.shape[-1]
        boxes = []
        for img in rgb:
            ys, xs = torch.nonzero((img[0] > 0.5) & (img[1] < 0.3) & (img[2] < 0.3), as_tuple=True)
            x0, y0, x1, y1 = xs.min() / side, ys.min() / side, (xs.max() + 1) / side, (ys.max() + 1) / side
            boxes.append([[(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], [0.97, 0.97, 0.04, 0.04]])
        probs = torch.where(mask[:, None, :], torch.tensor([0.9, 0.95])[None, :, None], torch.tensor(0.0))
        return probs, torch.tensor(boxes)


def test_boxes_land_on_the_original_pixels():
    expert = RedRectangleDetector(torch.nn.Identity(), tiny_owlv2_processor(128), CPU, None, {})
    cases = [((96, 160), (20, 50, 70, 130)), ((160, 96), (100, 10, 150, 60))]  # (H, W), truth (y0, x0, y1, x1)
    payloads = []
    for (h, w), (y0, x0, y1, x1) in cases:
        image = np.full((h, w, 3), 120, np.uint8)
        image[y0:y1, x0:x1] = (230, 20, 20)
        payloads.append(expert.prep({}, Image.fromarray(image), "a red box", {}))
    for ((h, w), (y0, x0, y1, x1)), found in zip(cases, expert.label(payloads)):
        assert [b["phrase"] for b in found] == ["red box"]  # the corner box lay in the padding
        assert found[0]["box"] == pytest.approx([x0, y0, x1, y1], abs=2.0)
        assert found[0]["score"] == pytest.approx(0.9)


def test_box_filter_threshold_nms_and_cap():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [30, 30, 40, 40], [50, 50, 60, 60.]])
    scores, labels = torch.tensor([0.9, 0.8, 0.7, 0.2, 0.6]), torch.tensor([0, 0, 1, 0, 0])
    kept = BoxFilter(threshold=0.3, nms_iou=0.5, max_boxes=10)(boxes, scores, labels, ["cat", "dog"])
    assert [(b["phrase"], b["score"]) for b in kept] == [("cat", 0.9), ("dog", 0.7), ("cat", 0.6)]
    assert len(BoxFilter(max_boxes=2)(boxes, scores, labels, ["cat", "dog"])) == 2
    with pytest.raises(MTVError):
        BoxFilter(threshold=2.0)


def test_inverse_depth_png_round_trip():
    inv = np.linspace(0.1, 3.0, 64 * 48, dtype=np.float32).reshape(48, 64)
    inv[0, :5] = np.nan
    png, meta = encode_inverse_depth(inv)
    raw = np.asarray(Image.open(io.BytesIO(png)))
    assert raw.dtype == np.uint16 and raw.shape == (48, 64)
    assert (raw[0, :5] == 0).all() and raw[np.isfinite(inv)].min() == 1 and raw.max() == 65535
    back = decode_depth({"depth.png": png}, meta)
    assert np.isnan(back[0, :5]).all()
    assert np.nanmax(np.abs(back - inv)) <= 2.9 / 65534
    flat, meta = encode_inverse_depth(np.full((4, 4), 2.5, np.float32))
    assert np.allclose(decode_depth({"depth.png": flat}, meta), 2.5)


# ---------------------------------------------------------------- the whole command with tiny real experts


def test_label_photos_with_tiny_experts(tiny, tmp_path, capsys):
    keys = write_photo_shards(tmp_path / "in")
    out = tmp_path / "out"
    run_cli(["label", "--in", str(tmp_path / "in"), "--out", str(out), "--depth-expert", tiny.depth,
             "--box-expert", tiny.boxes, "--batch-size", "3", "--workers", "2", "--score-threshold", "0.0",
             "--max-boxes", "4", "--device", "cpu"])
    text = capsys.readouterr().out
    assert "depth expert:" in text and "licence" in text and "images labelled" in text
    assert "bad_image 1" in text and "no_caption 1" in text and "too_small 1" in text
    assert "1 image with an empty caption: depth labelled, no boxes" in text

    labelled = samples(out)
    skipped = {s["key"]: s["reason"] for p in sorted(out.glob("*.report.json"))
               for s in json.loads(p.read_text())["skipped"]}
    assert set(labelled) | set(skipped) == set(keys) and not set(labelled) & set(skipped)  # none silently lost
    assert skipped == {"bad_jpeg": "bad_image", "no_txt": "no_caption", "tiny_img": "too_small"}
    source = samples(tmp_path / "in")
    captionless = json.loads(labelled.pop("empty_txt")["json"])  # depth needs no caption; boxes need phrases
    assert captionless["depth"]["type"] == "inverse_relative" and captionless["pseudo_boxes"] == []
    assert json.loads((out / "shard-000000.report.json").read_text())["empty_caption"] == 1
    for key, s in labelled.items():
        assert s["jpg"] == source[key]["jpg"] and s["txt"] == source[key]["txt"]  # originals untouched
        w, h = Image.open(io.BytesIO(s["jpg"])).size
        depth = np.asarray(Image.open(io.BytesIO(s["depth.png"])))
        assert depth.shape == (h, w) and depth.dtype == np.uint16 and depth.min() >= 1
        meta = json.loads(s["json"])
        assert meta["url"].endswith(f"{key}.jpg")  # the input's JSON keys are kept
        assert meta["depth"]["type"] == "inverse_relative" and meta["depth"]["expert"].endswith("depth")
        assert np.isfinite(decode_depth(s, meta["depth"])).all()
        assert 0 < len(meta["pseudo_boxes"]) <= 4  # threshold 0: every image gets its cap
        for b in meta["pseudo_boxes"]:
            x0, y0, x1, y1 = b["box"]
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h and 0 <= b["score"] <= 1
            assert b["phrase"] in meta_phrases(s)
        settings = meta["labels"]["settings"]
        assert settings["boxes"]["threshold"] == 0.0 and settings["boxes"]["phrases"]["max_phrases"] == 8
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["labels"]["settings"]["depth"]["expert"].endswith("depth")


def meta_phrases(sample):
    from mtv.experts import PhraseConfig

    return PhraseConfig().queries(sample["txt"].decode())


def test_output_is_independent_of_workers_and_resumes_without_relabelling(tiny, tmp_path, capsys):
    write_photo_shards(tmp_path / "in", n_shards=2, defects=False)
    common = dict(depth=tiny.depth, boxes=tiny.boxes, batch_size=2, device="cpu", log=lambda *_: None)
    one = label_shards(str(tmp_path / "in"), tmp_path / "a", workers=0, **common)
    label_shards(str(tmp_path / "in"), tmp_path / "b", workers=2, **common)
    assert tar_bytes(tmp_path / "a") == tar_bytes(tmp_path / "b")
    again = label_shards(str(tmp_path / "in"), tmp_path / "a", workers=2, **common)
    assert again["shards_labelled_now"] == 0 and again["images"] == one["images"] == 10
    with pytest.raises(MTVError, match="other settings.*threshold"):
        label_shards(str(tmp_path / "in"), tmp_path / "a", box_filter=BoxFilter(threshold=0.5), workers=0, **common)


def test_hub_ids_load_from_the_local_cache_with_revision_and_licence(tiny, tmp_path, monkeypatch):
    import shutil

    from huggingface_hub import constants

    repo, revision = tmp_path / "models--depth-anything--Depth-Anything-V2-Small-hf", "0123abcd" * 5
    shutil.copytree(tiny.depth, repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    expert = load_expert("depth", "depth-anything/Depth-Anything-V2-Small-hf", CPU)
    assert expert.provenance() == {"expert": "depth-anything/Depth-Anything-V2-Small-hf", "revision": revision,
                                   "licence": "Apache-2.0"}
    assert licence("depth-anything/Depth-Anything-V2-Large-hf") == "CC-BY-NC-4.0"
    assert licence("/models/owlv2-large-patch14-ensemble") == "Apache-2.0"


def test_missing_weights_are_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MTVError) as err:
        load_expert("depth", "nobody/no-such-depth-model", CPU)
    message = str(err.value)
    assert "\n" not in message and "Hugging Face cache" in message and "--allow-download" in message
    with pytest.raises(MTVError, match="directory"):
        load_expert("boxes", str(tmp_path), CPU)  # a directory without a model


def test_the_wrong_or_an_incomplete_checkpoint_is_refused(tiny, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    with pytest.raises(MTVError, match="owlv2 model, not depth_anything"):
        load_expert("depth", tiny.boxes, CPU)
    shutil.copytree(tiny.depth, tmp_path / "cut")
    weights = load_file(tmp_path / "cut" / "model.safetensors")
    save_file({k: v for k, v in weights.items() if "head" not in k}, tmp_path / "cut" / "model.safetensors")
    with pytest.raises(MTVError, match="lacks .* weights"):
        load_expert("depth", str(tmp_path / "cut"), CPU)


# ---------------------------------------------------------------- the MTV World oracle


def test_oracle_reproduces_the_truth_and_keeps_metric_depth(tmp_path):
    write_world_like_shards(tmp_path / "world")
    summary = label_shards(str(tmp_path / "world"), tmp_path / "out", depth="oracle", boxes="oracle", workers=0,
                           log=lambda *_: None)
    assert summary["images"] == 6 and summary["boxes_per_image"] == 1
    source = samples(tmp_path / "world")
    for key, s in samples(tmp_path / "out").items():
        meta, truth = json.loads(s["json"]), json.loads(source[key]["json"])
        assert meta["pseudo_boxes"] == [{"phrase": "large red cube", "box": truth["objects"][0]["box"], "score": 1.0}]
        z = decode_depth(s, meta["depth_metric"], "metric.depth.png")  # the world's truth, moved aside
        assert np.array_equal(z, decode_depth(source[key], truth["depth"]), equal_nan=True)
        inv = decode_depth(s, meta["depth"])
        surface = np.isfinite(z)
        assert np.isfinite(inv).all() and np.allclose(inv[~surface], 0, atol=1e-6)  # the sky is infinitely far
        assert np.allclose(inv[surface], 1 / z[surface], atol=1e-4)
        assert s["seg.png"] == source[key]["seg.png"]
    # Relabelling a labelled shard finds the metric truth where the first pass put it.
    again = label_shards(str(tmp_path / "out"), tmp_path / "again", depth="oracle", boxes="none", workers=0,
                         oracle=OracleConfig(depth_noise=0.1), log=lambda *_: None)
    assert again["images"] == 6


def test_oracle_noise_and_drop(tmp_path):
    write_world_like_shards(tmp_path / "world", per_shard=8)
    noisy = OracleConfig(box_noise=0.1, depth_noise=0.2, seed=3)
    for out in ("n1", "n2"):
        label_shards(str(tmp_path / "world"), tmp_path / out, depth="oracle", boxes="oracle", oracle=noisy,
                     workers=0, batch_size=3 if out == "n1" else 5, log=lambda *_: None)
    assert tar_bytes(tmp_path / "n1") == tar_bytes(tmp_path / "n2")  # noise depends on (seed, key) only
    source = samples(tmp_path / "world")
    for key, s in samples(tmp_path / "n1").items():
        box = json.loads(s["json"])["pseudo_boxes"][0]["box"]
        true = json.loads(source[key]["json"])["objects"][0]["box"]
        assert box != true and np.abs(np.subtract(box, true)).max() < 8
    dropped = label_shards(str(tmp_path / "world"), tmp_path / "d", depth="none", boxes="oracle", workers=0,
                           oracle=OracleConfig(drop=1.0), log=lambda *_: None)
    assert dropped["boxes"] == 0 and dropped["images"] == 16


@pytest.mark.parametrize("experts", ["oracle", "tiny"])
def test_generated_world_shards(experts, tiny, tmp_path):
    world = pytest.importorskip("mtv.world")
    if not hasattr(world, "generate_world"):
        pytest.skip("mtv.world.generate_world is not there yet")
    world.generate_world(tmp_path / "world", 6, 0, size=48, workers=1, shard_size=3, progress=False)
    depth, boxes = ("oracle", "oracle") if experts == "oracle" else (tiny.depth, tiny.boxes)
    summary = label_shards(str(tmp_path / "world"), tmp_path / "out", depth=depth, boxes=boxes, workers=0,
                           box_filter=BoxFilter(threshold=0.0), log=lambda *_: None)
    assert summary["images"] == 6 and summary["boxes"] > 0
    source = samples(tmp_path / "world")
    for key, s in samples(tmp_path / "out").items():
        meta = json.loads(s["json"])
        assert meta["depth"]["type"] == "inverse_relative" and meta["depth_metric"]["type"] == "metric"
        assert s["metric.depth.png"] == source[key]["depth.png"] and s["view2.png"] == source[key]["view2.png"]
        assert np.asarray(Image.open(io.BytesIO(s["depth.png"]))).shape == (48, 48)
        if experts == "oracle":
            visible = {o["phrase"] for o in meta["objects"] if o["box"] is not None}
            assert {b["phrase"] for b in meta["pseudo_boxes"]} <= visible
        assert all(0 <= v <= 48 for b in meta["pseudo_boxes"] for v in b["box"])


# ---------------------------------------------------------------- scale-out, bad input, kill and resume


def test_ranks_and_parts_split_the_shards(tmp_path, monkeypatch):
    write_world_like_shards(tmp_path / "world", n_shards=5, per_shard=1)
    done = []
    for rank, index in [(0, 0), (1, 0), (0, 1), (1, 1)]:  # torchrun ranks within each of two parts
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        s = label_shards(str(tmp_path / "world"), tmp_path / "out", depth="oracle", boxes="none", workers=0,
                         shard_index=index, num_shards=2, log=lambda *_: None)
        done.append(s["shards_labelled_now"])
    assert sum(done) == 5 and max(done) == 2
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    total = label_shards(str(tmp_path / "world"), tmp_path / "out", depth="oracle", boxes="none", workers=0,
                         log=lambda *_: None)  # one process over everything: all done, summed up
    assert total["shards_labelled_now"] == 0 and total["shards_done"] == 5 and total["images"] == 5
    with pytest.raises(MTVError, match="shard-index"):
        label_shards(str(tmp_path / "world"), tmp_path / "x", depth="oracle", boxes="none", shard_index=2,
                     num_shards=2)


def test_too_many_bad_samples_stop_the_run(tmp_path):
    (tmp_path / "in").mkdir()
    with ShardWriter(tmp_path / "in" / shard_name(0)) as w:
        for i in range(4):
            w.write({"__key__": f"{i}", "jpg": b"not a jpeg", "txt": b"a cat"})
    with pytest.raises(MTVError, match="4 of 4 samples skipped .*bad_image 4"):
        label_shards(str(tmp_path / "in"), tmp_path / "out", depth="oracle", boxes="none", workers=0)
    assert not list((tmp_path / "out").glob("*.tmp"))
    with pytest.raises(MTVError, match="input folder"):
        label_shards(str(tmp_path / "in"), tmp_path / "in", depth="oracle", boxes="none", workers=0)


def test_oracle_on_photos_leaves_no_empty_shard_done(tmp_path, capsys):
    """Photos have no world truth: every sample is skipped. No 0-sample shard is left as done, so a rerun
    fails the same way instead of reporting the shard finished."""
    write_photo_shards(tmp_path / "in", n_shards=1, defects=False)
    for attempt in range(2):
        with pytest.raises(MTVError, match="5 of 5 samples skipped .*no_metric_depth 5.*need MTV World shards"):
            label_shards(str(tmp_path / "in"), tmp_path / "out", depth="oracle", boxes="oracle", workers=0)
        assert not list((tmp_path / "out").glob("*.tar*"))
    s = summarise([tmp_path / "out" / shard_name(0)])
    assert s["shards_done"] == 0 and s["empty_input_shards"] and s["skipped"] == {"no_metric_depth": 5}


def test_a_file_that_is_not_a_tar_is_a_one_line_error(tmp_path):
    (tmp_path / "captions.txt").write_text("a cat\n")
    with pytest.raises(MTVError, match=r"--in: .*captions.txt is not a tar shard") as err:
        label_shards(str(tmp_path / "captions.txt"), tmp_path / "out", depth="oracle", boxes="none", workers=0)
    assert "\n" not in str(err.value)


SLOW_WORKERS = """
import os, sys, time
from mtv.experts import OracleDepth, label_shards

class SlowOracle(OracleDepth):
    def __init__(self):
        super().__init__()
        prep = self.prep
        def slow(*args):  # a long decode: the worker is busy, not waiting on the parent
            open(os.path.join(sys.argv[3], str(os.getpid())), "w").close()
            time.sleep(20)
            return prep(*args)
        self.prep = slow

label_shards(sys.argv[1], sys.argv[2], depth=SlowOracle(), boxes="none", workers=1, batch_size=1)
"""


def test_a_killed_run_leaves_no_worker_running(tmp_path):
    write_world_like_shards(tmp_path / "world", n_shards=1, per_shard=2)
    pids = tmp_path / "pids"
    pids.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", SLOW_WORKERS, str(tmp_path / "world"), str(tmp_path / "out"),
                             str(pids)], env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.time() + 60
    while not list(pids.iterdir()) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    worker = int(next(pids.iterdir()).name)
    assert worker != proc.pid  # the prep ran in a DataLoader worker
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 3
    while _alive(worker) and time.time() < deadline:
        time.sleep(0.05)
    assert not _alive(worker), "the DataLoader worker outlived its killed parent"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


SLOW_RUN = """
import sys, time
from mtv.experts import OracleDepth, label_shards

class SlowOracle(OracleDepth):
    def label(self, payloads):
        time.sleep(0.25)
        return super().label(payloads)

label_shards(sys.argv[1], sys.argv[2], depth=SlowOracle(), boxes="oracle", workers=0, batch_size=1)
"""


def test_killed_run_resumes_and_matches_an_uninterrupted_one(tmp_path):
    write_world_like_shards(tmp_path / "world", n_shards=5, per_shard=2)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_RUN, str(tmp_path / "world"), str(out)],
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.time() + 60
    while not list(out.glob("*.report.json")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = [p for p in out.glob("*.tar") if report_path(p).exists()]
    assert 1 <= len(done) < 5 and list(out.glob("*.tar.tmp"))  # killed with a shard in flight
    resumed = label_shards(str(tmp_path / "world"), out, depth="oracle", boxes="oracle", workers=2,
                           log=lambda *_: None)
    assert resumed["shards_labelled_now"] == 5 - len(done) and resumed["images"] == 10
    assert not list(out.glob("*.tmp"))
    label_shards(str(tmp_path / "world"), tmp_path / "clean", depth="oracle", boxes="oracle", workers=0,
                 log=lambda *_: None)
    assert tar_bytes(out) == tar_bytes(tmp_path / "clean")


@pytest.mark.parametrize("where, code, words", [("shard", errno.ENOSPC, "no space left on device"),
                                                ("report", errno.EROFS, "read-only file system")])
def test_a_full_or_read_only_disk_is_one_line_and_leaves_no_partial_file(tmp_path, monkeypatch, where, code,
                                                                         words):
    import pathlib

    write_world_like_shards(tmp_path / "world", n_shards=2)
    if where == "shard":
        def full(self, sample):
            self._file.write(b"half a sample")
            raise OSError(code, os.strerror(code))
        monkeypatch.setattr(ShardWriter, "write", full)
    else:
        real = pathlib.Path.write_bytes

        def refuse_reports(self, data):
            if ".report.json" in self.name:
                raise OSError(code, os.strerror(code))
            return real(self, data)
        monkeypatch.setattr(pathlib.Path, "write_bytes", refuse_reports)
    with pytest.raises(MTVError) as err:
        label_shards(str(tmp_path / "world"), tmp_path / "out", depth="oracle", boxes="oracle", workers=0,
                     log=lambda *_: None)
    message = str(err.value)
    assert words in message and str(tmp_path / "out") in message and "\n" not in message
    assert not list((tmp_path / "out").glob("*.tmp")) and not list((tmp_path / "out").glob("*.tar"))
