"""The sigmoid image–text loss: value, gradients, chunked form, invariances, and multi-rank equality."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from mtv.losses import distributed_sigmoid_loss, sigmoid_loss


def features(n: int, d: int = 8, seed: int = 0, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (F.normalize(torch.randn(n, d, generator=g, dtype=dtype), dim=-1),
            F.normalize(torch.randn(n, d, generator=g, dtype=dtype), dim=-1))


def test_value_matches_naive_double_loop():
    x, y = features(5)
    t, b = 10.0, -3.0
    total = 0.0
    for i in range(5):
        for j in range(5):
            z = 1.0 if i == j else -1.0
            logit = t * sum(float(x[i, k]) * float(y[j, k]) for k in range(x.shape[1])) + b
            total += math.log(1.0 / (1.0 + math.exp(-z * logit)))
    expected = -total / 5
    assert sigmoid_loss(x, y, torch.tensor(t), torch.tensor(b)).item() == pytest.approx(expected, rel=1e-5)
    negatives = -sum(math.log(1.0 / (1.0 + math.exp(t * float(x[i] @ y[j]) + b)))
                     for i in range(5) for j in range(5)) / 5
    assert sigmoid_loss(x, y, t, b, negative_only=True).item() == pytest.approx(negatives, rel=1e-5)


@pytest.mark.parametrize("chunk_size", [None, 2])
@pytest.mark.parametrize("negative_only", [False, True])
def test_gradcheck(chunk_size, negative_only):
    x, y = features(5, d=4, dtype=torch.float64)
    inputs = (x.requires_grad_(), y.requires_grad_(),
              torch.tensor([2.5], dtype=torch.float64, requires_grad=True),  # (1,) like SiglipModel.logit_scale
              torch.tensor(-1.0, dtype=torch.float64, requires_grad=True))
    assert torch.autograd.gradcheck(
        lambda *a: sigmoid_loss(*a, negative_only=negative_only, chunk_size=chunk_size), inputs)


@pytest.mark.parametrize("negative_only", [False, True])
def test_chunked_equals_plain(negative_only):
    x, y = features(13, d=16, seed=1)
    params = [torch.tensor(7.0, requires_grad=True), torch.tensor(-4.0, requires_grad=True)]
    x, y = x.requires_grad_(), y.requires_grad_()
    plain = sigmoid_loss(x, y, *params, negative_only=negative_only)
    expected = torch.autograd.grad(plain, [x, y, *params])
    for chunk_size in (1, 4, 5, 13):
        chunked = sigmoid_loss(x, y, *params, negative_only=negative_only, chunk_size=chunk_size)
        assert_close(chunked, plain)
        assert_close(torch.autograd.grad(chunked, [x, y, *params]), expected)


def test_aligned_pairs_beat_shuffled_pairs():
    x, _ = features(8)
    aligned = sigmoid_loss(x, x, 100.0, 0.0)
    shuffled = sigmoid_loss(x, x[torch.roll(torch.arange(8), 1)], 100.0, 0.0)
    assert aligned < shuffled


def test_joint_permutation_leaves_loss_unchanged():
    x, y = features(9, seed=2)
    perm = torch.randperm(9, generator=torch.Generator().manual_seed(3))
    assert_close(sigmoid_loss(x[perm], y[perm], 10.0, -10.0), sigmoid_loss(x, y, 10.0, -10.0))


def test_half_precision_inputs_are_computed_in_fp32():
    x, y = features(6, seed=4)
    loss = sigmoid_loss(x.bfloat16(), y.bfloat16(), 10.0, -10.0)
    assert loss.dtype == torch.float32
    assert_close(loss, sigmoid_loss(x.bfloat16().float(), y.bfloat16().float(), 10.0, -10.0))


def test_single_process_falls_back_to_sigmoid_loss():
    x, y = features(6, seed=5)
    for mode in ("ring", "gather"):
        assert_close(distributed_sigmoid_loss(x, y, 10.0, -10.0, mode=mode), sigmoid_loss(x, y, 10.0, -10.0))
    with pytest.raises(ValueError, match="mode"):
        distributed_sigmoid_loss(x, y, 10.0, -10.0, mode="ring-allreduce")


def test_positives_need_square_batch():
    x, y = features(6)
    with pytest.raises(ValueError, match="as many texts"):
        sigmoid_loss(x, y[:4], 10.0, -10.0)


@pytest.mark.slow
@pytest.mark.parametrize("world", [2, 3])
def test_multi_rank_equals_single_process_on_global_batch(world):
    """Both modes, chunked and not, on `world` gloo ranks; the script asserts loss and DDP-averaged gradient
    equality (see its docstring) and exits non-zero on any mismatch."""
    script = Path(__file__).with_name("dist_sigmoid_check.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world}",
         str(script), "ring", "gather"],
        capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert result.stdout.count("OK ") == 4, result.stdout
