"""ADE20K mIoU equals mmsegmentation's IoUMetric, checked against an independent NumPy implementation of its
definition (reduce_zero_label, ignore index 255, per-image histograms summed, IoU = I / U, NaN-mean) on stored
maps where the conventions differ: the zero label, a 255 pixel, a class in neither truth nor prediction, a class
only predicted and a class never predicted."""

import math

import numpy as np
import torch
from PIL import Image

from mtv.eval.benchmarks.ade20k import load_ade20k, reduce_zero_label
from mtv.eval.metrics import seg_areas, seg_scores

C = 5


def mmseg_reference(preds: list[np.ndarray], raws: list[np.ndarray], num_classes: int) -> dict:
    """mmseg: label 0 -> 255, label - 1, 254 -> 255; pixels with label 255 dropped; histograms over [0, C - 1]
    of the intersection, prediction and label, summed over images; IoU = I / U, mIoU = nanmean, aAcc = I / L."""
    total = np.zeros((3, num_classes))
    for pred, raw in zip(preds, raws):
        label = raw.astype(np.int64)
        label[label == 0] = 255
        label = label - 1
        label[label == 254] = 255
        mask = label != 255
        p, t = pred[mask], label[mask]
        hist = lambda x: np.histogram(x, bins=num_classes, range=(0, num_classes - 1))[0]  # noqa: E731
        total += [hist(p[p == t]), hist(p), hist(t)]
    inter, area_pred, area_label = total
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = inter / (area_pred + area_label - inter)
    return {"miou": np.nanmean(iou), "pixel_acc": inter.sum() / area_label.sum(), "iou": iou}


RAWS = [np.array([[0, 1, 1, 2], [2, 255, 3, 3]], np.uint8),  # stored ADE values: 0 other, 255 unlabelled
        np.array([[1, 1, 0, 0], [3, 3, 3, 255]], np.uint8)]
PREDS = [np.array([[0, 4, 1, 1], [1, 0, 2, 0]]),  # class 4 (stored 5) only predicted; class 3 (stored 4)
         np.array([[0, 0, 2, 2], [2, 2, 0, 1]])]  # in neither truth nor prediction: NaN, out of the mean


def test_ade20k_miou_equals_mmseg_where_conventions_differ(tmp_path):
    base = tmp_path / "ADEChallengeData2016"
    for i, raw in enumerate(RAWS):
        (base / "images" / "validation").mkdir(parents=True, exist_ok=True)
        (base / "annotations" / "validation").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((2, 4, 3), np.uint8)).save(base / "images" / "validation" / f"ADE_val_{i}.jpg")
        Image.fromarray(raw).save(base / "annotations" / "validation" / f"ADE_val_{i}.png")
    split = load_ade20k(tmp_path)
    areas = sum(seg_areas(torch.as_tensor(p), torch.as_tensor(split.seg(i)), C) for i, p in enumerate(PREDS))
    ours, ref = seg_scores(areas), mmseg_reference(PREDS, RAWS, C)
    assert math.isclose(ours["miou"], ref["miou"]) and math.isclose(ours["pixel_acc"], ref["pixel_acc"])
    assert [v is None for v in ours["per_class_iou"]] == list(np.isnan(ref["iou"])) == [False] * 3 + [True, False]
    np.testing.assert_allclose([v for v in ours["per_class_iou"] if v is not None], ref["iou"][~np.isnan(ref["iou"])])
    assert ref["iou"][4] == 0.0  # predicted, never true: counted as 0, not left out


def test_reduce_zero_label_ignores_zero_and_255_and_shifts_the_rest():
    assert reduce_zero_label(np.array([0, 1, 150, 255], np.uint8)).tolist() == [-1, 0, 149, -1]


def test_a_kept_pixel_whose_label_is_out_of_range_counts_under_its_prediction():
    """mmseg masks only the ignore index; a label above the class range keeps its prediction in the histogram."""
    areas = seg_areas(torch.tensor([1, 1]), torch.tensor([1, 7]), 3)
    assert areas.tolist() == [[0, 1, 0], [0, 2, 0], [0, 2, 0], [0, 1, 0]]
    assert math.isnan(seg_scores(torch.zeros(4, 3, dtype=torch.long))["miou"])
