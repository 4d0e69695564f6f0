"""The depth probe's loss, bins and NYUv2 crop against Probe3D's definitions (``evals/utils/losses.py``,
``evals/models/probes.py``, ``evals/utils/metrics.py``), written here independently, on inputs where the forms
the probe used before (one scale of neighbours, softmax bins, the Eigen crop) give other values."""

import math

import numpy as np
import pytest
import torch

from mtv.eval.benchmarks.nyuv2 import EIGEN_PROTOCOL, PROTOCOL
from mtv.eval.depth_probe import gradient_loss, linear_bins, sig_loss


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(2, 13, 17, generator=g, dtype=torch.float64) * 9 + 0.5
    pred = (target * torch.exp(0.3 * torch.randn(2, 13, 17, generator=g, dtype=torch.float64))).clamp(0.01, 10)
    target[torch.rand(2, 13, 17, generator=g) < 0.2] = float("nan")
    return pred, target, torch.isfinite(target)


def probe3d_gradient_loss(pred: np.ndarray, target: np.ndarray, valid: np.ndarray) -> float:
    """Probe3D's gradient_loss, pixel by pixel: at the full map and every 2nd, 4th and 6th pixel, |r(i) - r(i+2)|
    of the log residual between valid pixels two apart, over the batch, divided by that scale's valid count."""
    total = 0.0
    for step in (1, 2, 4, 6):
        p, t, v = pred[:, ::step, ::step], target[:, ::step, ::step], valid[:, ::step, ::step]
        r = np.where(v, np.log(p + 1e-3) - np.log(np.nan_to_num(t, nan=1.0) + 1e-3), 0.0)
        s = 0.0
        for b, i, j in np.ndindex(*r.shape):
            if i + 2 < r.shape[1] and v[b, i, j] and v[b, i + 2, j]:
                s += abs(r[b, i, j] - r[b, i + 2, j])
            if j + 2 < r.shape[2] and v[b, i, j] and v[b, i, j + 2]:
                s += abs(r[b, i, j] - r[b, i, j + 2])
        total += s / v.sum()
    return total


def probe3d_sig_loss(pred: np.ndarray, target: np.ndarray, valid: np.ndarray) -> float:
    g = np.log(pred[valid] + 1e-3) - np.log(target[valid] + 1e-3)
    return math.sqrt((g ** 2).mean() - 0.85 * g.mean() ** 2)


def test_gradient_and_sig_loss_equal_probe3d():
    for seed in range(3):
        pred, target, valid = _inputs(seed)
        args = pred.numpy(), target.numpy(), valid.numpy()
        assert gradient_loss(pred, target, valid).item() == pytest.approx(probe3d_gradient_loss(*args), rel=1e-9)
        assert sig_loss(pred, target, valid).item() == pytest.approx(probe3d_sig_loss(*args), rel=1e-9)


def test_the_whole_probe_loss_is_probe3ds_where_one_scale_of_neighbours_differs():
    """The form before: one stride of adjacent-pixel differences, each axis's mean over its valid pairs."""
    pred, target, valid = _inputs(1)
    args = pred.numpy(), target.numpy(), valid.numpy()
    ours = 10 * sig_loss(pred, target, valid) + 0.5 * gradient_loss(pred, target, valid)
    reference = 10 * probe3d_sig_loss(*args) + 0.5 * probe3d_gradient_loss(*args)
    r = torch.where(valid, pred.log() - target.nan_to_num(1.0).log(), 0)
    before = sum(((r.diff(dim=d).abs())[valid.narrow(d, 1, valid.shape[d] - 1) & valid.narrow(d, 0, valid.shape[d] - 1)]
                  ).mean() for d in (-1, -2))
    assert ours.item() == pytest.approx(reference, rel=1e-9)
    assert abs(10 * probe3d_sig_loss(*args) + 0.5 * before.item() - reference) / reference == pytest.approx(0.097,
                                                                                                           abs=5e-4)


def test_linear_bins_are_relu_plus_a_tenth_normalised():
    logits = torch.tensor([[2.0, -1.0, 0.5, 0.0]]).reshape(1, 4, 1, 1)
    w = np.array([2.1, 0.1, 0.6, 0.1])
    np.testing.assert_allclose(linear_bins(logits)[0, :, 0, 0].numpy(), w / w.sum(), rtol=1e-6)
    assert not torch.allclose(linear_bins(logits), logits.softmax(1))  # not the softmax used before


def test_nyuv2_is_scored_without_the_eigen_crop_by_default():
    target = torch.full((480, 640), 3.0)
    assert PROTOCOL.crop == "none" and PROTOCOL.mask(target).all()  # Probe3D: evaluate_depth(nyu_crop=False)
    kept = EIGEN_PROTOCOL.mask(target)
    assert kept.sum() == (471 - 45) * (601 - 41) and kept[45, 41] and not kept[44, 41]
