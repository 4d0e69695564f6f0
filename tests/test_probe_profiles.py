"""Probe profiles (`mtv.eval.profiles`): the probe3d profile's DPT head against Probe3D's definition
(configs/probe/depth_dpt.yaml, evals/models/probes.py, train_depth.py), built small and stepped once on a CPU."""

import math

import pytest
import torch

from mtv.errors import MTVError
from mtv.eval.depth_probe import DepthProbe, DPTHead
from mtv.eval.profiles import PROFILES, probe3d_layers, profile
from mtv.eval.segmentation import warmup_cosine_factor


def test_probe3d_profile_is_probe3ds_dpt_and_steps_once_on_cpu():
    p3d = PROFILES["probe3d"]
    assert (p3d.depth_head, p3d.depth_width, p3d.image_side) == ("dpt", 512, 480)
    b = p3d.depth_budget
    assert (b.epochs, b.lr, b.batch_size, b.weight_decay, b.warmup_epochs) == (10, 5e-4, 8, 1e-2, 1.5)
    assert probe3d_layers(12) == [2, 5, 8, 11] and probe3d_layers(24) == [5, 11, 17, 23]
    assert probe3d_layers(6) == [0, 2, 2, 5]  # n//4 - 1, n//2 - 1, n//4*3 - 1, n - 1
    dim, width, grid = 16, 8, (3, 3)
    probe = DepthProbe(dim, 4, 1e-3, 10.0, head="dpt", width=width)
    head = probe.head
    assert isinstance(head, DPTHead)
    assert [c.weight.shape for c in head.project] == [(width, dim, 1, 1)] * 4
    units = [*head.skip, *head.fuse]  # 3 fusion blocks with a skip unit, the deepest without: 7 residual units
    assert len(units) == 7 and all(u.conv1.weight.shape == (width, width, 3, 3) for u in units)
    assert head.hidden.weight.shape == (width, width, 3, 3) and head.logits.weight.shape == (256, width, 3, 3)
    layers = torch.randn(2, 4, 9, dim)
    assert head(layers, grid).shape == (2, 256, 48, 48)  # 16 x the patch grid
    opt = torch.optim.AdamW(probe.parameters(), lr=1e-3)
    depth = probe(layers, grid, (40, 40))
    assert depth.shape == (2, 40, 40) and (depth > 0).all()
    depth.mean().backward()
    opt.step()
    assert all(p.grad is not None for p in probe.parameters())


def test_probe3d_schedule_warms_up_from_one_percent_then_decays_to_it():
    assert warmup_cosine_factor(0, 100, 15) == pytest.approx(0.01)
    assert warmup_cosine_factor(15, 100, 15) == pytest.approx(1.0)
    assert warmup_cosine_factor(100, 100, 15) == pytest.approx(0.01)
    assert warmup_cosine_factor(50, 100, 15) == pytest.approx(0.99 * math.cos(0.5 * math.pi * 35 / 85) + 0.01)


def test_an_unknown_protocol_is_one_line():
    with pytest.raises(MTVError, match="--protocol 'fast': choose one of cpu, probe3d"):
        profile("fast")
