"""The untrained floor and the image-free priors of a world report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mtv.eval.correspondence import Pair
from mtv.eval.depth_probe import DepthProtocol
from mtv.eval.floor import untrained_model
from mtv.eval.priors import depth_prior, geo_prior, sem_prior, seg_prior
from mtv.eval.suite import run_suite


def _as_trained(src, dst, seed: int, scale: float, bias: float):
    """``src``'s files with an mtv_export.json saying it was trained from ``seed`` and that logit init."""
    shutil.copytree(src, dst)
    (dst / "mtv_export.json").write_text(json.dumps({"config": {
        "seed": seed, "model": {"init_logit_scale": scale, "init_logit_bias": bias}}}))
    return dst


def test_untrained_twin_uses_the_runs_init_seed_and_is_built_once(eval_model_dir, tmp_path):
    from transformers import SiglipConfig, SiglipModel

    from mtv.models.siglip import build_model
    from mtv.models.tokenizer import load_processor

    model_dir = _as_trained(eval_model_dir, tmp_path / "export", seed=7, scale=5.0, bias=-3.0)
    path, recipe = untrained_model(model_dir)
    assert recipe["seed"] == 7 and recipe["source"] == "mtv_export.json"
    twin = SiglipModel.from_pretrained(path).state_dict()
    config = SiglipConfig.from_pretrained(model_dir)
    expected = build_model(config, 5.0, -3.0, seed=7).state_dict()
    other_seed = build_model(config, 5.0, -3.0, seed=8).state_dict()
    assert all(torch.equal(twin[k], v) for k, v in expected.items())
    assert not torch.equal(twin["vision_model.embeddings.patch_embedding.weight"],
                           other_seed["vision_model.embeddings.patch_embedding.weight"])
    assert twin["logit_bias"].item() == -3.0
    assert load_processor(path).image_processor.size == load_processor(model_dir).image_processor.size
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert untrained_model(model_dir)[0] == path and (path / "model.safetensors").stat().st_mtime_ns == stamp
    assert not list(path.parent.glob("*.tmp*"))  # nothing half-written left beside the entry


def test_floor_is_the_same_probes_on_the_untrained_twin_and_is_cached(eval_model_with_heads, world_eval_splits,
                                                                       tmp_path):
    train, val = world_eval_splits
    model_dir = _as_trained(eval_model_with_heads, tmp_path / "export", seed=3, scale=10.0, bias=-10.0)
    kw = dict(suite="world", train=train, epochs=1, max_samples=12, seed=2, progress=False)
    report = run_suite(model_dir, val, tmp_path / "a", **kw)
    floor = report["metrics_floor"]
    assert "seg_miou" in floor and "corr_geo_recall" in floor and "depth_rmse" in floor
    assert not any(k.startswith(("depth_head", "grounding")) for k in floor)  # no heads, no floor
    assert report["config"]["floor"]["cached"] is False and report["config"]["floor"]["seed"] == 3
    # the floor is exactly what the untrained twin gets when evaluated directly with the same probe seed
    twin, _ = untrained_model(model_dir)
    direct = run_suite(twin, val, tmp_path / "direct", floor=False, **kw)["metrics"]
    assert floor == {k: direct[k] for k in floor}
    again = run_suite(model_dir, val, tmp_path / "b", **kw)
    assert again["config"]["floor"]["cached"] is True and again["metrics_floor"] == floor
    md = (tmp_path / "a" / "report.md").read_text()
    assert "| metric | value | untrained floor | image-free prior | chance |" in md and "init seed 3" in md
    # a different probe seed is a different floor
    assert run_suite(model_dir, val, tmp_path / "c", **{**kw, "seed": 5})["config"]["floor"]["cached"] is False


def test_an_untrained_model_sits_exactly_on_its_floor(eval_model_dir, world_eval_splits, tmp_path):
    """`eval_model_dir` is itself an untrained seed-0 model with SigLIP's logit init: its twin is itself."""
    train, val = world_eval_splits
    report = run_suite(eval_model_dir, val, tmp_path, "seg,corr_geo", train=train, epochs=1, progress=False)
    assert report["metrics_floor"] == report["metrics"]


def test_seg_prior_predicts_each_pixels_majority_class():
    train = [torch.tensor([[0, 1], [2, 2]]), torch.tensor([[0, 1], [2, 0]]), torch.tensor([[1, 1], [2, 0]])]
    # majority map [[0, 1], [2, 0]]: on the test map [[0, 1], [1, 1]] pixels 1 and 2 are right
    scores = seg_prior(train, [torch.tensor([[0, 1], [1, 1]])], 3)
    assert scores["seg_pixel_acc"] == pytest.approx(0.5)
    # IoU: class 0 1/2 (pred 0 at two pixels, truth 0 at one), class 1 1/3, class 2 0/1
    assert scores["seg_miou"] == pytest.approx((1 / 2 + 1 / 3 + 0) / 3)


def test_seg_prior_of_large_maps_is_counted_on_a_coarser_grid_and_scored_at_full_size():
    big = torch.zeros(300, 300, dtype=torch.long)
    big[:, 150:] = 1  # left half class 0, right half class 1: the prior is exact at any grid
    assert seg_prior([big, big], [big], 2) == {"seg_miou": 1.0, "seg_pixel_acc": 1.0}


def test_depth_prior_predicts_each_rows_mean_training_depth():
    protocol = DepthProtocol(0.1, 100.0)
    nan = float("nan")
    train = [torch.tensor([[nan, nan], [4.0, 6.0]]), torch.tensor([[nan, nan], [2.0, 4.0]])]
    # row 1's mean is 4; row 0 has no valid training pixel and takes the overall mean, also 4
    test = torch.tensor([[nan, nan], [2.0, 8.0]])
    scores = depth_prior(train, [test], protocol)
    assert scores["depth_rmse"] == pytest.approx(np.sqrt((4 + 16) / 2))
    assert scores["depth_absrel"] == pytest.approx((1.0 + 0.5) / 2)


def test_identity_correspondence_priors_by_hand():
    pair = Pair(0, 1, np.array([[10.0, 10.0], [30.0, 30.0]]), np.array([[12.0, 10.0], [30.0, 50.0]]),
                category="cube", bbox=(0.0, 0.0, 40.0, 30.0))
    # errors 2 px and 20 px on a 64-px side: 0.031 and 0.31
    geo = geo_prior([pair], [(64, 64)], [(64, 64)], (0.05, 0.5), 0.05)
    assert geo == {"corr_geo_recall": 0.5, "corr_geo_recall_05": 0.5, "corr_geo_recall_50": 1.0}
    # PCK@0.1 of a 40-px box: 4 px, so only the first point; a target twice as large scales the identity
    assert sem_prior([pair], [(64, 64)], [(64, 64)], 0.1) == {"corr_sem_pck": 0.5}
    double = Pair(0, 1, pair.pts_a, pair.pts_a * 2, category="cube", bbox=(0.0, 0.0, 40.0, 30.0))
    assert sem_prior([double], [(64, 64)], [(128, 128)], 0.1) == {"corr_sem_pck": 1.0}


def _package_copy(tmp_path, subpackages) -> Path:
    """These mtv subpackages copied under ``tmp_path/mtv``, to edit without touching the installed source."""
    from mtv.eval import floor

    root = tmp_path / "mtv"
    for sub in subpackages:
        shutil.copytree(floor.PACKAGE_ROOT / sub, root / sub, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def test_a_changed_probe_source_gives_new_floor_keys(eval_model_dir, tmp_path, monkeypatch):
    """Keys follow the eval and model-building source, not only the mtv version: editing a probe in a checkout
    must not serve the floor its old code computed. Other packages (the trainer) do not move the digest."""
    from mtv.eval import floor

    root = _package_copy(tmp_path, (*floor.KEYED_SOURCES, "train"))
    assert floor.source_digest(root) == floor.source_digest() == floor.LOADED_SOURCE  # the copy is the package
    (root / "train" / "loop.py").write_text("# trainer edit\n", encoding="utf-8")
    assert floor.source_digest(root) == floor.LOADED_SOURCE
    probe = root / "eval" / "depth_probe.py"
    probe.write_text(probe.read_text() + "\n# changed probe\n")
    edited = floor.source_digest(root)
    assert edited != floor.LOADED_SOURCE

    twin, _ = untrained_model(eval_model_dir)
    settings = {"data": str(tmp_path), "probes": ["depth"], "seed": 0}
    before = floor.floor_report_dir(twin, settings)
    monkeypatch.setattr(floor, "LOADED_SOURCE", edited)  # a process started after the edit
    assert floor.floor_report_dir(twin, settings) != before
    assert untrained_model(eval_model_dir)[0] != twin  # the twin's key moves with the source too


def test_a_running_job_keys_its_floors_by_the_code_it_loaded(eval_model_dir, tmp_path, monkeypatch):
    """A probe edited on disk while a job runs (an ablation trains for an hour, then evaluates) must not make the
    job cache what its old code computes under the new code's key."""
    from mtv.eval import floor

    root = _package_copy(tmp_path, floor.KEYED_SOURCES)
    monkeypatch.setattr(floor, "PACKAGE_ROOT", root)
    twin, _ = untrained_model(eval_model_dir)
    settings = {"data": str(tmp_path), "probes": ["depth"], "seed": 0}
    before = floor.floor_report_dir(twin, settings)
    probe = root / "eval" / "depth_probe.py"
    probe.write_text(probe.read_text() + "\n# changed probe\n")
    assert floor.source_digest() != floor.LOADED_SOURCE  # the disk moved on
    assert floor.floor_report_dir(twin, settings) == before
    assert untrained_model(eval_model_dir)[0] == twin
