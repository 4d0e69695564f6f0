"""Semantic correspondence conventions (`mtv.eval.keypoints`): Probe3D's keypoint transfer and strict PCK against
an implementation written here from Probe3D's evaluate_spair_correspondence, and SPair-71k's viewpoint bins on a
fixture in SPair's published layout."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from mtv.eval.benchmarks.spair import load_spair
from mtv.eval.keypoints import hits, pck_metrics, transfer

RNG = np.random.default_rng(0)


def probe3d_transfer(feat_a, size_a, pts, feat_b, size_b):
    """Probe3D: unit-norm cells; the query is the bilinear mix of A's cells with the corners of the image at the
    centres of the corner cells (align_corners=True); the answer is the top-left corner of B's best cell."""
    fa = feat_a.numpy() / np.linalg.norm(feat_a.numpy(), axis=0, keepdims=True)
    fb = feat_b.numpy() / np.linalg.norm(feat_b.numpy(), axis=0, keepdims=True)
    (ha, wa), (hb, wb) = size_a, size_b
    d, h, w = fa.shape
    out = []
    for x, y in pts:
        gx, gy = x / wa * (w - 1), y / ha * (h - 1)
        x0, y0 = int(np.floor(gx)), int(np.floor(gy))
        x1, y1 = min(x0 + 1, w - 1), min(y0 + 1, h - 1)
        tx, ty = gx - x0, gy - y0
        q = ((1 - tx) * (1 - ty) * fa[:, y0, x0] + tx * (1 - ty) * fa[:, y0, x1]
             + (1 - tx) * ty * fa[:, y1, x0] + tx * ty * fa[:, y1, x1])
        heat = np.einsum("d,dhw->hw", q, fb)
        r, c = np.unravel_index(np.argmax(heat), heat.shape)
        out.append([c / fb.shape[2] * wb, r / fb.shape[1] * hb])
    return np.array(out)


def test_probe3d_transfer_equals_the_reference_and_differs_from_the_centre_convention():
    g = torch.Generator().manual_seed(0)
    feat_a, feat_b = torch.randn(8, 4, 6, generator=g), torch.randn(8, 5, 3, generator=g)
    size_a, size_b = (40, 60), (50, 30)
    pts = np.stack([RNG.uniform(0, 60, 20), RNG.uniform(0, 40, 20)], 1)
    ours = transfer(feat_a, size_a, pts, feat_b, size_b, "probe3d")
    np.testing.assert_allclose(ours, probe3d_transfer(feat_a, size_a, pts, feat_b, size_b), atol=1e-4)
    # every prediction is a cell corner of B: x on multiples of 30 / 3, y of 50 / 5
    np.testing.assert_allclose(ours / [10, 10], np.round(ours / [10, 10]), atol=1e-6)
    assert not np.allclose(ours, transfer(feat_a, size_a, pts, feat_b, size_b, "centre"))


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
        eval_model_dir, tmp_path, convention):
    from mtv.eval.encoders import load_encoder
    from mtv.eval.suite import FeatureStore, run_suite

    root = write_spair(tmp_path / "data")
    split = load_spair(root)
    assert [p.viewpoint for p in split.sem_pairs] == [0, 1, 2, 1]
    report = run_suite(eval_model_dir, root, tmp_path / "out", "corr_sem", progress=False,
                       sem_convention=convention)
    cfg = report["config"]["corr_sem"]
    assert cfg["convention"] == convention and cfg["matching"].startswith("Probe3D" if convention == "probe3d"
                                                                          else "query sampled")
    # the reference: features of the same model, each pair scored from its definition, then averaged by hand
    feats = FeatureStore(load_encoder(eval_model_dir), [1], batch_size=64, cache=False, progress=False)(split)
    fmap = lambda i: feats.tokens[i].float().T.reshape(-1, *feats.grid)  # noqa: E731
    by_bin: dict = {}
    for p in split.sem_pairs:
        if convention == "probe3d":
            pred = probe3d_transfer(fmap(p.a), feats.sizes[p.a], p.pts_a, fmap(p.b), feats.sizes[p.b])
        else:
            pred = transfer(fmap(p.a), feats.sizes[p.a], p.pts_a, fmap(p.b), feats.sizes[p.b], "centre")
        x0, y0, x1, y1 = p.bbox
        err = np.linalg.norm(pred - p.pts_b, axis=1)
        bound = 0.1 * max(x1 - x0, y1 - y0)
        hit = err < bound if convention == "probe3d" else err <= bound
        for key in ("all", p.viewpoint):
            by_bin.setdefault(key, {}).setdefault(p.category, []).extend(hit.tolist())
    expected = {("corr_sem_pck" if key == "all" else f"corr_sem_pck_vp{key}"):
                np.mean([np.mean(h) for h in classes.values()]) for key, classes in by_bin.items()}
    assert report["metrics"] == pytest.approx(expected)
    assert set(report["metrics_prior"]) == set(expected)
