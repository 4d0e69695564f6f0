"""Box geometry against values worked out by hand."""

import pytest
import torch

from mtv.ops.boxes import batched_nms, box_area, box_iou, cxcywh_to_xyxy, generalized_box_iou, nms


def t(*rows):
    return torch.tensor(rows, dtype=torch.float32)


def test_cxcywh_to_xyxy_and_area():
    assert cxcywh_to_xyxy(t([5, 5, 4, 2])).tolist() == [[3, 4, 7, 6]]
    assert box_area(t([0, 0, 2, 3], [1, 1, 1, 5], [2, 2, 1, 1])).tolist() == [6, 0, 0]


def test_iou_by_hand():
    a, b = t([0, 0, 2, 2]), t([1, 1, 3, 3], [0, 0, 2, 2], [5, 5, 6, 6])
    # overlap 1, union 4 + 4 - 1 = 7; identical; disjoint
    assert box_iou(a, b)[0].tolist() == pytest.approx([1 / 7, 1.0, 0.0])
    assert box_iou(t([0, 0, 0, 0]), t([0, 0, 0, 0])).item() == 0  # empty boxes: no NaN


def test_generalized_iou_by_hand():
    a, b = t([0, 0, 2, 2]), t([1, 1, 3, 3], [0, 0, 2, 2], [3, 0, 4, 2])
    # hull 3x3 = 9, union 7: 1/7 - 2/9; identical: 1; disjoint side by side: hull 8, union 6: 0 - 2/8
    assert generalized_box_iou(a, b)[0].tolist() == pytest.approx([1 / 7 - 2 / 9, 1.0, -0.25])
    far = generalized_box_iou(t([0, 0, 1, 1]), t([99, 99, 100, 100])).item()
    assert -1 < far < -0.99


def test_generalized_iou_is_differentiable():
    a = t([0, 0, 2, 2]).requires_grad_()
    (1 - generalized_box_iou(a, t([1, 1, 3, 3]))).sum().backward()
    assert torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = t([0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 9])
    scores = torch.tensor([0.5, 0.9, 0.7, 0.8])
    # box 1 (0.9) suppresses 0 (IoU 81/119) and 3 (IoU 80/120); box 2 is elsewhere
    assert nms(boxes, scores, 0.5).tolist() == [1, 2]
    assert nms(boxes, scores, 0.95).tolist() == [1, 3, 2, 0]


def test_nms_ties_keep_the_earlier_box():
    assert nms(t([0, 0, 1, 1], [0, 0, 1, 1]), torch.tensor([1.0, 1.0]), 0.5).tolist() == [0]


def test_batched_nms_only_within_groups():
    boxes = t([0, 0, 10, 10], [1, 1, 11, 11], [1, 1, 11, 11])
    scores, groups = torch.tensor([0.9, 0.8, 0.7]), torch.tensor([0, 1, 0])
    assert batched_nms(boxes, scores, groups, 0.5).tolist() == [0, 1]
    assert batched_nms(t(), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5).tolist() == []
