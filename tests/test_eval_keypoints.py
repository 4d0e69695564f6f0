"""Semantic correspondence conventions (`mtv.eval.keypoints`): Probe3D's keypoint transfer and strict PCK against
an implementation written here from Probe3D's evaluate_spair_correspondence, and SPair-71k's viewpoint bins on a
fixture in SPair's published layout."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from mtv.eval.benchmarks.spair import load_spair
from mtv.eval.keypoints import PROBE3D_SIDE, PROBE3D_VIEW, hits, pck_metrics, scored_points, transfer

RNG = np.random.default_rng(0)


def probe3d_hits(feat_a, size_a, pts_a, feat_b, size_b, pts_b, bbox, side=800):
    """Probe3D's SPairDataset + compute_errors for features of the padded, resized squares: keypoints in int
    tensors (truncated, scaled by side / max(H, W) and truncated on assignment), divided by the side; unit-norm
    cells; the query is the bilinear mix of A's cells with the corners at the corner cells' centres
    (align_corners=True); the answer is B's best cell (col, row) / width; error / (max box side / max(H, W)) < 0.1."""
    kps_a, kps_b = torch.tensor(pts_a).int(), torch.tensor(pts_b).int()
    kps_a[:, :2] = kps_a[:, :2] * side / max(size_a)
    kps_b[:, :2] = kps_b[:, :2] * side / max(size_b)
    ka, kb = kps_a.numpy() / side, kps_b.numpy() / side
    fa = feat_a.numpy() / np.linalg.norm(feat_a.numpy(), axis=0, keepdims=True)
    fb = feat_b.numpy() / np.linalg.norm(feat_b.numpy(), axis=0, keepdims=True)
    d, h, w = fa.shape
    out = []
    for (x, y), target in zip(ka, kb):
        gx, gy = x * (w - 1), y * (h - 1)
        x0, y0 = int(np.floor(gx)), int(np.floor(gy))
        x1, y1 = min(x0 + 1, w - 1), min(y0 + 1, h - 1)
        tx, ty = gx - x0, gy - y0
        q = ((1 - tx) * (1 - ty) * fa[:, y0, x0] + tx * (1 - ty) * fa[:, y0, x1]
             + (1 - tx) * ty * fa[:, y1, x0] + tx * ty * fa[:, y1, x1])
        heat = np.einsum("d,dhw->hw", q, fb)
        r, c = np.unravel_index(np.argmax(heat), heat.shape)
        pred = np.array([c, r]) / fb.shape[-1]
        thresh_scale = max(bbox[2] - bbox[0], bbox[3] - bbox[1]) / max(size_b)
        out.append(np.linalg.norm(pred - target) / thresh_scale < 0.1)
    return np.array(out)


def test_probe3d_transfer_and_pck_equal_the_reference_where_truncation_and_padding_matter():
    """Non-square images (the padded square's side is the longer one) and keypoints with fractions, so that
    scoring in the unpadded frame or without Probe3D's two truncations would give other hits."""
    g = torch.Generator().manual_seed(0)
    feat_a, feat_b = torch.randn(8, 6, 6, generator=g), torch.randn(8, 5, 5, generator=g)
    size_a, size_b = (41, 63), (57, 33)
    pts_a = np.stack([RNG.uniform(0, 63, 200), RNG.uniform(0, 41, 200)], 1)
    pts_b = np.stack([RNG.uniform(0, 33, 200), RNG.uniform(0, 57, 200)], 1)
    bbox = (2.0, 3.0, 30.0, 40.0)
    pred = transfer(feat_a, size_a, pts_a, feat_b, size_b, "probe3d")
    ours = hits(pred, scored_points(pts_b, size_b, "probe3d"), bbox, 0.1, "probe3d").numpy()
    np.testing.assert_array_equal(ours, probe3d_hits(feat_a, size_a, pts_a, feat_b, size_b, pts_b, bbox))
    # every prediction is a cell corner of B's padded square (side 57, 5 cells)
    np.testing.assert_allclose(pred / (57 / 5), np.round(pred / (57 / 5)), atol=1e-6)
    assert not np.array_equal(ours, hits(pred, pts_b, bbox, 0.1, "probe3d").numpy())  # the truncation counts
    assert (scored_points(pts_b, size_b, "probe3d") <= pts_b).all()


def test_the_probe3d_view_pads_white_to_a_square_and_centre_pads_to_the_patch(eval_model_dir):
    from mtv.eval.encoders import load_encoder
    from mtv.eval.features import ImageView, view_pixels
    from mtv.models.tokenizer import load_processor

    assert PROBE3D_SIDE == 800 and PROBE3D_VIEW == ImageView(side=800, pad_square=True, layers=False)
    processor = load_processor(eval_model_dir)
    encoder = load_encoder(eval_model_dir)
    assert encoder.patch_size == 8
    image = Image.fromarray(RNG.integers(0, 255, (30, 50, 3), dtype=np.uint8))
    padded = np.full((50, 50, 3), 255, np.uint8)
    padded[:30] = np.asarray(image)
    want = processor(images=[Image.fromarray(padded)], return_tensors="pt", size={"height": 44, "width": 44})
    got = view_pixels(encoder, [image], ImageView(side=44, pad_square=True))
    assert got.shape[-2:] == (48, 48)  # 44 -> 48: 2 zero rows and columns each side, as center_padding
    torch.testing.assert_close(got[..., 2:46, 2:46], want["pixel_values"], atol=1e-5, rtol=0)
    assert got[..., :2, :].abs().sum() == 0 and got[..., 46:, :].abs().sum() == 0
    assert got[..., :2].abs().sum() == 0 and got[..., 46:].abs().sum() == 0


def test_a_keypoint_exactly_at_the_threshold_counts_only_under_the_inclusive_test():
    bbox = (0, 0, 50, 40)  # longer side 50: alpha 0.1 -> 5 px
    pred, truth = np.array([[10.0, 10.0], [0.0, 0.0]]), np.array([[13.0, 14.0], [0.0, 4.9]])  # errors 5, 4.9
    assert hits(pred, truth, bbox, 0.1, "centre").tolist() == [True, True]
    assert hits(pred, truth, bbox, 0.1, "probe3d").tolist() == [False, True]


def test_pck_averages_keypoints_within_a_class_then_classes_and_bins_by_viewpoint():
    per_pair = [torch.tensor([True, False, False, False]), torch.tensor([True, True]),  # cat, vp 0 and 1
                torch.tensor([False]), torch.tensor([True, True, False])]  # dog, vp 0; dog, no bin
    metrics, per_class = pck_metrics(per_pair, ["cat", "cat", "dog", "dog"], [0, 1, 0, None])
    assert per_class == pytest.approx({"cat": 3 / 6, "dog": 2 / 4})
    assert metrics == pytest.approx({"corr_sem_pck": (3 / 6 + 2 / 4) / 2, "corr_sem_pck_vp0": (1 / 4 + 0) / 2,
                                     "corr_sem_pck_vp1": 1.0})


def write_spair(root):
    """Four pairs in SPair-71k's layout: PairAnnotation/test/<id>-<src>-<trg>:<category>.json with the published
    fields, images in JPEGImages/<category>/, viewpoint_variation 0, 1, 2 and 1."""
    base = root / "SPair-71k"
    sizes = {"2008_000001": (60, 40), "2008_000002": (45, 52), "2009_000003": (64, 48), "2009_000004": (50, 50)}
    cats = {"2008_000001": "cat", "2008_000002": "cat", "2009_000003": "dog", "2009_000004": "dog"}
    for name, (w, h) in sizes.items():
        path = base / "JPEGImages" / cats[name] / f"{name}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(RNG.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
    (base / "PairAnnotation" / "test").mkdir(parents=True)
    for k, (src, trg, vp) in enumerate([("2008_000001", "2008_000002", 0), ("2008_000002", "2008_000001", 1),
                                        ("2009_000003", "2009_000004", 2), ("2009_000004", "2009_000003", 1)]):
        (ws, hs), (wt, ht) = sizes[src], sizes[trg]
        n = 4 + k
        pair = {"pair_id": k + 1, "filename": f"{k + 1:06d}-{src}-{trg}:{cats[src]}", "category": cats[src],
                "src_imname": f"{src}.jpg", "trg_imname": f"{trg}.jpg",
                "src_imsize": [ws, hs, 3], "trg_imsize": [wt, ht, 3],
                "src_bndbox": [1, 2, ws - 3, hs - 1], "trg_bndbox": [2, 1, wt - 1, ht - 4],
                "src_pose": 0, "trg_pose": 0, "kps_ids": [str(i) for i in range(n)],
                "src_kps": RNG.integers(0, min(ws, hs), (n, 2)).tolist(),
                "trg_kps": RNG.integers(0, min(wt, ht), (n, 2)).tolist(),
                "mirror": 0, "viewpoint_variation": vp, "scale_variation": 0, "truncation": 0, "occlusion": 0}
        (base / "PairAnnotation" / "test" / f"{pair['filename']}.json").write_text(json.dumps(pair))
    return root


@pytest.mark.parametrize("convention", ["centre", "probe3d"])
def test_spair_suite_reports_the_convention_and_viewpoint_bins_as_the_reference_computes(
        eval_model_dir, tmp_path, convention, monkeypatch):
    from mtv.eval import keypoints
    from mtv.eval.encoders import load_encoder
    from mtv.eval.features import ImageView
    from mtv.eval.suite import FeatureStore, run_suite

    side = 96  # Probe3D's 800 px costs the micro model a minute on a CPU; the side is a parameter of the rule
    view = ImageView(side=side, pad_square=True, layers=False)
    monkeypatch.setattr(keypoints, "PROBE3D_SIDE", side)
    monkeypatch.setitem(keypoints.VIEWS, "probe3d", view)

    root = write_spair(tmp_path / "data")
    split = load_spair(root)
    assert [p.viewpoint for p in split.sem_pairs] == [0, 1, 2, 1]
    report = run_suite(eval_model_dir, root, tmp_path / "out", "corr_sem", progress=False,
                       sem_convention=convention)
    cfg = report["config"]["corr_sem"]
    assert cfg["convention"] == convention and cfg["matching"].startswith("Probe3D" if convention == "probe3d"
                                                                          else "query sampled")
    assert cfg["image_side"] == (side if convention == "probe3d" else "the processor's")
    # the reference: features of the same model, each pair scored from its definition, then averaged by hand
    store = FeatureStore(load_encoder(eval_model_dir), [1], batch_size=64, cache=False, progress=False)
    feats = store(split, view) if convention == "probe3d" else store(split)
    fmap = lambda i: feats.tokens[i].float().T.reshape(-1, *feats.grid)  # noqa: E731
    by_bin: dict = {}
    for p in split.sem_pairs:
        if convention == "probe3d":
            assert feats.grid == (12, 12)  # 96 px at the micro model's patch 8
            hit = probe3d_hits(fmap(p.a), feats.sizes[p.a], p.pts_a, fmap(p.b), feats.sizes[p.b], p.pts_b, p.bbox,
                               side)
        else:
            pred = transfer(fmap(p.a), feats.sizes[p.a], p.pts_a, fmap(p.b), feats.sizes[p.b], "centre")
            x0, y0, x1, y1 = p.bbox
            hit = np.linalg.norm(pred - p.pts_b, axis=1) <= 0.1 * max(x1 - x0, y1 - y0)
        for key in ("all", p.viewpoint):
            by_bin.setdefault(key, {}).setdefault(p.category, []).extend(hit.tolist())
    expected = {("corr_sem_pck" if key == "all" else f"corr_sem_pck_vp{key}"):
                np.mean([np.mean(h) for h in classes.values()]) for key, classes in by_bin.items()}
    assert report["metrics"] == pytest.approx(expected)
    assert set(report["metrics_prior"]) == set(expected)
