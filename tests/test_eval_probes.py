"""Dense-probe metrics against hand-computed cases, the linear probe's sanity (near-perfect when features encode
the label, chance when labels are shuffled), correspondence geometry, and the world suite end to end."""

import json

import numpy as np
import pytest
import torch

from mtv.cli import main
from mtv.eval.correspondence import gt_matches, match, object_keypoints
from mtv.eval.depth_probe import DepthProtocol, gradient_loss, sig_loss
from mtv.eval.metrics import (IGNORE, align_inverse_depth, box_accuracy, box_iou, depth_errors, pck, recall_at,
                              scale_shift_fit, seg_areas, seg_scores)
from mtv.eval.segmentation import ProbeBudget, evaluate_seg, train_linear_seg
from mtv.eval.suite import run_suite

LABELS = torch.tensor([[0, 0, 1], [1, 2, IGNORE]])


def seg(pred, target=LABELS, c=3):
    scores = seg_scores(seg_areas(torch.as_tensor(pred), target, c))
    return {k: scores[k] for k in ("miou", "pixel_acc")}


def test_segmentation_perfect_constant_permutation():
    assert seg(LABELS.clamp_min(0)) == {"miou": 1.0, "pixel_acc": 1.0}
    # constant class 0: IoU 2/5 for class 0, 0 for the others; 2 of 5 labelled pixels right
    assert seg(torch.zeros(2, 3, dtype=torch.long)) == pytest.approx({"miou": (2 / 5) / 3, "pixel_acc": 2 / 5})
    # classes renamed 0->1->2->0: every labelled pixel wrong
    assert seg((LABELS.clamp_min(0) + 1) % 3) == {"miou": 0.0, "pixel_acc": 0.0}
    # a class neither present nor predicted is left out of the mean
    assert seg(LABELS.clamp_min(0), c=5)["miou"] == 1.0


def test_depth_errors_perfect_constant_and_invalid_pixels():
    target = torch.tensor([[1.0, 2.0], [4.0, float("nan")]])
    valid = DepthProtocol(1e-3, 10).mask(target)
    assert valid.tolist() == [[True, True], [True, False]]
    assert depth_errors(target.nan_to_num(5.0), target, valid) == \
        {"rmse": 0.0, "absrel": 0.0, "delta1": 1.0, "delta2": 1.0, "delta3": 1.0}
    e = depth_errors(torch.full((2, 2), 2.0), target, valid)
    assert e["rmse"] == pytest.approx(((1 + 0 + 4) / 3) ** 0.5)
    assert e["absrel"] == pytest.approx((1 + 0 + 0.5) / 3)
    # only the pixel at 2 m is within any δ: the others are off by a factor 2 > 1.25³ ≈ 1.95
    assert [e[f"delta{k}"] for k in (1, 2, 3)] == pytest.approx([1 / 3] * 3)
    assert depth_errors(target, target, torch.zeros(2, 2, dtype=torch.bool)) is None
    assert not DepthProtocol(1e-3, 10, crop="eigen").mask(torch.ones(480, 640))[:45].any()


def test_scale_and_shift_are_recovered():
    target = torch.rand(8, 8) * 5 + 1
    valid = torch.ones(8, 8, dtype=torch.bool)
    valid[0] = False
    pred = (target - 0.5) / 3.0
    pred[0] = 100.0  # invalid pixels must not pull the fit
    s, t = scale_shift_fit(pred, target, valid)
    assert (s, t) == (pytest.approx(3.0, rel=1e-6), pytest.approx(0.5, rel=1e-5))
    inv = 0.2 / target + 0.7  # a relative inverse depth: known scale and shift of the true inverse
    aligned = align_inverse_depth(inv, target, valid, max_depth=10)
    torch.testing.assert_close(aligned[valid], target[valid], rtol=1e-5, atol=1e-5)


def test_probe_losses_vanish_for_a_perfect_prediction():
    target = torch.rand(2, 6, 6) + 1
    valid = torch.ones_like(target, dtype=torch.bool)
    assert sig_loss(target, target, valid) < 1e-5 and gradient_loss(target, target, valid) == 0
    assert sig_loss(target * 2, target, valid) > 0.1  # λ < 1 keeps part of the scale in the loss


def test_correspondence_and_box_metrics():
    assert recall_at(torch.tensor([0.0, 1.0, 2.0, float("nan")]), (0.5, 1.5, 10)) == {0.5: 0.25, 1.5: 0.5, 10: 0.75}
    hit = pck(torch.tensor([[0.0, 0.0], [5.0, 0.0]]), torch.zeros(2, 2), torch.tensor(40.0))
    assert hit.tolist() == [True, False]  # 5 px > 0.1 x 40
    boxes = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0]])
    torch.testing.assert_close(box_iou(boxes, torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 2.0, 2.0]])),
                               torch.tensor([1.0, 0.25]))
    assert box_accuracy(boxes, boxes) == 1.0 and box_accuracy(boxes, boxes.flip(0)) == 0.0


def _grid_task(n, shuffle, seed=0):
    """Each 4x4 patch grid cell carries one of 4 classes; features are the class one-hot plus noise."""
    g = torch.Generator().manual_seed(seed)
    cls = torch.randint(0, 4, (n, 16), generator=g)
    feats = torch.nn.functional.one_hot(cls, 8).float() + 0.1 * torch.randn(n, 16, 8, generator=g)
    labels = cls[torch.randperm(n, generator=g)] if shuffle else cls
    maps = labels.reshape(n, 4, 4).repeat_interleave(2, 1).repeat_interleave(2, 2)  # 8x8 label maps
    return feats, maps


@pytest.mark.parametrize("shuffle", [False, True])
def test_linear_probe_is_perfect_on_separable_features_and_chance_on_shuffled_labels(shuffle):
    feats, maps = _grid_task(96, shuffle)
    probe = train_linear_seg(feats[:64], (4, 4), maps[:64], 4, ProbeBudget(epochs=10, lr=0.1, batch_size=16))
    scores = evaluate_seg(probe, feats[64:], (4, 4), list(maps[64:]), 4)
    if shuffle:
        assert scores["pixel_acc"] == pytest.approx(0.25, abs=0.08)
    else:
        assert scores["miou"] > 0.97


def test_ground_truth_matches_follow_the_pose_and_respect_occlusion():
    K = np.array([[20.0, 0, 8], [0, 20.0, 8], [0, 0, 1]])
    depth = np.full((16, 16), 5.0, np.float32)
    depth[:, :4] = np.nan  # sky: no matches from there
    shift = np.eye(4)
    shift[0, 3] = 0.5  # camera B sees everything 0.5 units to the right: +2 px at depth 5
    a, b = gt_matches(depth, K, depth.copy(), K, shift, 1000, np.random.default_rng(0))
    assert len(a) > 0 and np.all(a[:, 0] > 4)
    np.testing.assert_allclose(b - a, np.tile([2.0, 0.0], (len(a), 1)), atol=1e-9)
    occluded = np.full((16, 16), 1.0, np.float32)  # B sees a surface in front of every point
    assert len(gt_matches(depth, K, occluded, K, shift, 1000, np.random.default_rng(0))[0]) == 0


def test_matching_identical_features_finds_the_same_place():
    feat = torch.eye(16).reshape(16, 4, 4)  # every patch unique
    pts = np.array([[2.0, 2.0], [10.0, 6.0], [14.0, 14.0]])  # patch centres of a 16-px image with 4-px patches
    # the features resolve a match to its patch (4 px): the prediction is a pixel centre within it
    pred = match(feat, (16, 16), pts, feat, (16, 16))
    assert np.all(np.abs(pred - pts) <= 2) and np.all(pred % 1 == 0.5)
    mask = np.zeros((5, 5), bool)
    mask[1:4, 2] = True
    np.testing.assert_allclose(object_keypoints(mask), [[2.5, 2.5], [2.5, 1.5], [2.5, 3.5], [2.5, 2.5], [2.5, 2.5]])


@pytest.fixture(scope="module")
def world_report(eval_model_with_heads, world_eval_splits, tmp_path_factory):
    train, val = world_eval_splits
    out = tmp_path_factory.mktemp("suite")
    return out, run_suite(eval_model_with_heads, val, out, "world", train=train, epochs=2, progress=False)


def test_world_suite_reports_every_probe(world_report, world_eval_splits):
    out, report = world_report
    assert json.loads((out / "report.json").read_text()) == report
    assert report["not_run"] == {}
    for key in ("seg_miou", "seg_pixel_acc", "depth_rmse", "depth_absrel", "depth_delta1", "corr_geo_recall",
                "corr_geo_recall_01", "corr_geo_recall_10", "corr_geo_recall_ratio", "corr_geo_recall_3d_5", "corr_sem_pck", "depth_head_absrel",
                "depth_head_delta1", "grounding_acc50", "zeroshot_top1", "retrieval_i2t_r1"):
        assert np.isfinite(report["metrics"][key]), key
    fractions = {k: v for k, v in report["metrics"].items() if not k.endswith(("rmse", "absrel"))}
    assert all(0 <= v <= 1 for v in fractions.values())
    cfg = report["config"]
    assert cfg["seg"]["epochs"] == 2 and cfg["seg"]["seed"] == 0 and cfg["seg"]["n_train"] == 24
    assert cfg["depth"]["crop"] == "none" and cfg["depth"]["test_time_augmentation"] is False
    assert cfg["feature_passes"] == 3  # train, held-out, held-out second views: once each
    # the world suite keeps today's corr_geo_recall* and adds Probe3D's beside it, each named in the config
    assert set(cfg["corr_geo"]["protocols"]) == {"corr_geo_recall*", "corr_geo_p3d_recall*"}
    assert cfg["corr_geo"]["protocols"]["corr_geo_recall*"]["protocol"].startswith("mtv")
    # at 64 px the world's headline is the recall at 0.10 of the side (0.8 patch), for the encoder and its prior
    assert cfg["corr_geo"]["protocols"]["corr_geo_recall*"]["headline"] == 0.10
    assert report["metrics"]["corr_geo_recall"] == report["metrics"]["corr_geo_recall_10"]
    assert report["metrics_prior"]["corr_geo_recall"] == report["metrics_prior"]["corr_geo_recall_10"]
    assert cfg["corr_geo"]["protocols"]["corr_geo_p3d_recall*"]["protocol"].startswith("probe3d")
    assert {"corr_geo_p3d_recall", "corr_geo_p3d_recall_3d_2", "corr_geo_p3d_recall_px_05"} <= set(report["metrics"])
    assert report["num_samples"] == {"train": 24, "test": 16, "test-view2": 16}
    assert "| seg_miou |" in (out / "report.md").read_text()


def test_plain_siglip_skips_the_head_probes_and_no_cache_recomputes(eval_model_dir, world_eval_splits, tmp_path):
    train, val = world_eval_splits
    report = run_suite(eval_model_dir, val, tmp_path, "seg,depth_head,grounding,corr_sem", train=train, epochs=1,
                       cache=False, progress=False)
    assert set(report["not_run"]) == {"depth_head", "grounding"}
    assert "no MTV depth head" in report["not_run"]["depth_head"]
    assert report["config"]["feature_passes"] == 3  # seg: train + test; corr_sem: test again


def test_cli_suite_and_bad_suite(eval_model_dir, world_eval_splits, tmp_path, capsys):
    train, val = world_eval_splits
    assert main(["eval", "--model", str(eval_model_dir), "--data", str(val), "--out", str(tmp_path / "o"),
                 "--suite", "corr_geo", "--max-samples", "4"]) == 0
    assert "corr_geo_recall" in json.loads((tmp_path / "o" / "report.json").read_text())["metrics"]
    assert main(["eval", "--model", str(eval_model_dir), "--data", str(val), "--out", str(tmp_path / "o"),
                 "--suite", "seg,nope"]) == 2
    assert "unknown probe 'nope'" in capsys.readouterr().err


def test_suite_zeroshot_and_retrieval_equal_the_plain_evaluate(eval_model_dir, eval_shards, tmp_path):
    from mtv.eval import evaluate

    plain = evaluate(eval_model_dir, eval_shards, tmp_path / "plain", progress=False)
    suite = run_suite(eval_model_dir, eval_shards, tmp_path / "suite", "zeroshot,retrieval", progress=False)
    assert suite["metrics"] == pytest.approx(plain["metrics"], abs=1e-6)
    assert suite["skipped"]["test/bad_image"] == 1 and suite["skipped"]["test/empty_caption"] == 1


def test_ratio_test_angle_and_binned_recall_by_hand():
    from mtv.eval.metrics import binned_recall, ratio_test, rotation_angle

    # distances sqrt(2 - 2 s): (0 vs 1.414) pass; (1 vs 1.414) pass at 0.8 (1 < 1.131), fail at 0.7; ties fail
    best, second = torch.tensor([1.0, 0.5, 0.3]), torch.tensor([0.0, 0.0, 0.3])
    assert ratio_test(best, second, 0.8).tolist() == [True, True, False]
    assert ratio_test(best, second, 0.7).tolist() == [True, False, False]
    c, s = np.cos(np.pi / 4), np.sin(np.pi / 4)
    assert rotation_angle(torch.tensor([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])) == pytest.approx(45.0)
    assert rotation_angle(torch.eye(3)) == 0.0
    assert rotation_angle(torch.diag(torch.tensor([-1.0, -1.0, 1.0]))) == pytest.approx(180.0)
    hits, angles = torch.tensor([True, False, True, True, False]), torch.tensor([10.0, 20.0, 45.0, 120.0, 130.0])
    # 60-90 has no match (left out, not 0); 120 closes the last bin; 130 is beyond the bins
    assert binned_recall(hits, angles, (0, 30, 60, 90, 120)) == {(0, 30): 0.5, (30, 60): 1.0, (90, 120): 1.0}


def test_back_projection_inverts_the_projection():
    from mtv.eval.correspondence import back_project, relative_angle

    K = np.array([[20.0, 0, 8], [0, 20.0, 8], [0, 0, 1]])
    depth = np.full((16, 16), 5.0)
    depth[0, 0] = np.nan
    xyz = back_project(np.array([[8.0, 8.0], [12.0, 8.5], [0.5, 0.5], [20.0, 1.0]]), depth, K)
    np.testing.assert_allclose(xyz[:2], [[0, 0, 5], [1.0, 0.125, 5]])  # 4 px at f 20, depth 5: 1 unit
    assert np.isnan(xyz[2:]).all()  # invalid depth, outside the image
    assert relative_angle(np.eye(4)) == 0.0


def _permuted_pair(featureless: bool = False):
    """A 16-px, 4x4-patch image pair: B shows A's patches shuffled by a known permutation (cell ``perm[i]`` of B
    is cell i of A), at depth 5 with f = 20. A ``featureless`` B looks alike everywhere: every nearest
    neighbour ties with a rival far away, so no match survives the ratio test."""
    from mtv.eval.correspondence import GeoTruth, Pair, back_project

    K = np.array([[20.0, 0, 8], [0, 20.0, 8], [0, 0, 1]])
    depth = np.full((16, 16), 5.0)
    perm = np.random.default_rng(0).permutation(16)
    feat_a = torch.eye(16).reshape(16, 4, 4)
    feat_b = torch.ones(16, 4, 4) if featureless else torch.eye(16)[:, np.argsort(perm)].reshape(16, 4, 4)
    centre = lambda cells: np.stack([cells % 4 * 4 + 2.0, cells // 4 * 4 + 2.0], 1)  # noqa: E731
    pts_a, pts_b = centre(np.arange(16)), centre(perm)
    truth = GeoTruth(back_project(pts_b, depth, K), 45.0, lambda: (depth, K), 1.0, "units")
    return Pair(0, 0, pts_a, pts_b, geo=truth), feat_a, feat_b


def test_geo_metrics_perfect_matcher_and_ratio_failures():
    from mtv.eval.correspondence import geo_metrics, score_geo_pair

    # a prediction is a pixel centre in the right patch: at most 1.5 px off per axis, 2.12 < 0.15 x 16 px
    score = lambda pair, fa, fb, **kw: geo_metrics([score_geo_pair(pair, fa, (16, 16), fb, (16, 16))],  # noqa: E731
                                                   thresholds=(0.15,), headline=0.15, **kw)
    metrics, config = score(*_permuted_pair())
    assert metrics["corr_geo_recall"] == 1.0 and metrics["corr_geo_recall_ratio"] == 1.0
    assert metrics["corr_geo_recall_3d_1"] == 1.0  # 2.12 px at f 20, depth 5: 0.53 units < 1
    assert [k for k in metrics if "angle" in k] == ["corr_geo_recall_angle_30_60"]  # empty bins left out
    assert metrics["corr_geo_recall_angle_30_60"] == 1.0
    assert config["ratio_test"] == 0.8 and config["thresholds_3d"] == "1, 2, 5 units"

    metrics, _ = score(*_permuted_pair(featureless=True))
    assert metrics["corr_geo_recall_ratio"] == 0.0 and metrics["corr_geo_recall_3d_5"] == 0.0
    assert metrics["corr_geo_recall_angle_30_60"] == 0.0
    # without the test every query takes B's first pixel (0.5, 0.5): only cell 0's centre is within 2.4 px,
    # and every true point is within 19.1 px = 4.8 units of it
    plain, config = score(*_permuted_pair(featureless=True), ratio=None)
    assert "corr_geo_recall_ratio" not in plain and config["ratio_test"] is False
    assert plain["corr_geo_recall"] == metrics["corr_geo_recall"] == 1 / 16 and plain["corr_geo_recall_3d_5"] == 1


def test_feature_rows_stay_aligned_when_a_whole_batch_fails_to_open(eval_model_dir):
    """A first batch of unreadable images must still leave one (zero) row per image, so later indices hold."""
    import io

    from PIL import Image

    from mtv.eval.benchmarks import Split
    from mtv.eval.encoders import load_encoder
    from mtv.eval.suite import FeatureStore

    encoder = load_encoder(eval_model_dir)
    pngs = []
    for colour in ("red", "blue"):
        buf = io.BytesIO()
        Image.new("RGB", (40, 30), colour).save(buf, format="PNG")
        pngs.append(buf.getvalue())
    split = Split(name="t", images=[b"not an image", b"nor this", *pngs])
    feats = FeatureStore(encoder, [1], batch_size=2, cache=False, progress=False)(split)
    alone = FeatureStore(encoder, [1], batch_size=2, cache=False, progress=False)(
        Split(name="u", images=pngs))
    assert feats.ok.tolist() == [False, False, True, True] and len(feats.tokens) == 4 == len(feats.pooled)
    assert torch.equal(feats.tokens[2:], alone.tokens) and torch.equal(feats.pooled[2:], alone.pooled)
    assert not feats.tokens[:2].any() and split.skipped["bad_image"] == 2
