"""Depth: SSI + gradient-matching loss against a plain NumPy computation, its invariances, the DPT and linear
heads and the objective's handling of unlabelled images."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mtv.errors import MTVError
from mtv.losses.depth import align, depth_loss, gradient_matching
from mtv.models.depth_head import depth_layers
from mtv.models.siglip import build_model, preset_config
from mtv.models.vision import encode_images
from mtv.objectives.depth import Depth, DepthConfig

MODES = ("lstsq", "median")


def targets(seed=0, b=3, h=24, w=20):
    """Inverse depth with NaN and zero holes (invalid), and a prediction."""
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(b, 1, h, w, generator=g) * 3 + 0.5
    target[0, 0, :4] = float("nan")
    target[1, 0, 5:11, 2:9] = 0.0
    target[2, 0, 0, 0] = -1.0
    return target, torch.rand(b, 1, h, w, generator=g)


def reference(pred, target, mode, grad_weight=0.5, scales=4):
    """MiDaS loss for one (H, W) image, by the textbook (its image-based reduction): NumPy, explicit loops; the
    median mode's data term is Depth Anything's mean absolute residual."""
    pred, target = pred.double().numpy(), target.double().numpy()
    valid = np.isfinite(target) & (target > 0)
    t = target[valid]
    t_norm = (t - np.median(t)) / np.mean(np.abs(t - np.median(t)))
    p = pred[valid]
    if mode == "lstsq":
        (s, shift), *_ = np.linalg.lstsq(np.stack([p, np.ones_like(p)], 1), t_norm, rcond=None)
        aligned = s * p + shift
        ssi = np.sum((aligned - t_norm) ** 2) / (2 * len(t))  # MiDaS's mse_loss: divided by 2M
    else:
        aligned = (p - np.median(p)) / np.mean(np.abs(p - np.median(p)))
        ssi = np.mean(np.abs(aligned - t_norm))
    residual = np.zeros_like(pred)
    residual[valid] = aligned - t_norm
    grad = 0.0
    for k in range(scales):
        r, m = residual[:: 2 ** k, :: 2 ** k], valid[:: 2 ** k, :: 2 ** k]
        total = 0.0
        for y in range(r.shape[0]):
            for x in range(r.shape[1]):
                if x + 1 < r.shape[1] and m[y, x] and m[y, x + 1]:
                    total += abs(r[y, x + 1] - r[y, x])
                if y + 1 < r.shape[0] and m[y, x] and m[y + 1, x]:
                    total += abs(r[y + 1, x] - r[y, x])
        grad += total / m.sum()
    return ssi + grad_weight * grad


@pytest.mark.parametrize("mode", MODES)
def test_loss_matches_numpy_reference(mode):
    target, pred = targets()
    for t in target:  # odd valid counts: torch's and NumPy's medians then agree
        if (torch.isfinite(t) & (t > 0)).sum() % 2 == 0:
            t[0, -1, -1] = float("nan")
    got = depth_loss(pred, target, normalisation=mode, min_valid_fraction=0.0)
    want = np.mean([reference(pred[i, 0], target[i, 0], mode) for i in range(3)])
    assert got.item() == pytest.approx(want, rel=1e-4)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("scale,shift", [(3.7, -2.5), (0.05, 40.0), (1.0, 1e-3)])
def test_loss_is_invariant_to_scale_and_shift_of_prediction(mode, scale, shift):
    target, pred = targets()
    base = depth_loss(pred, target, normalisation=mode)
    assert depth_loss(scale * pred + shift, target, normalisation=mode).item() == pytest.approx(base.item(), rel=1e-3)


@pytest.mark.parametrize("mode", MODES)
def test_affine_copy_of_target_has_zero_loss_and_zero_gradient_term(mode):
    target, _ = targets()
    pred = (2.5 * target + 0.7).nan_to_num(123.0)  # holes filled with nonsense
    assert depth_loss(pred, target, normalisation=mode).item() == pytest.approx(0.0, abs=1e-5)
    mask = torch.isfinite(target[:, 0]) & (target[:, 0] > 0)
    aligned, normed = align(pred[:, 0], target[:, 0], mask, mode)
    residual = torch.where(mask, aligned - normed, 0.0)
    assert gradient_matching(residual, mask).abs().max().item() < 1e-5


@pytest.mark.parametrize("mode", MODES)
def test_invalid_pixels_change_nothing(mode):
    target, pred = targets()
    pred.requires_grad_(True)
    loss = depth_loss(pred, target, normalisation=mode)
    loss.backward()
    invalid = ~(torch.isfinite(target) & (target > 0))
    assert (pred.grad[invalid] == 0).all() and (pred.grad[~invalid] != 0).any()
    other_pred = torch.where(invalid, torch.randn_like(pred) * 100, pred.detach())
    other_target = torch.where(invalid, torch.where(torch.rand_like(target) < 0.5, float("nan"), -2.0), target)
    again = depth_loss(other_pred, other_target, normalisation=mode)
    assert again.item() == pytest.approx(loss.item(), rel=1e-6)


def test_images_with_too_few_valid_pixels_contribute_nothing():
    target, pred = targets()
    target[1] = float("nan")
    target[1, 0, 0, :3] = 1.0  # 3 valid pixels of 480
    full = depth_loss(pred, target, min_valid_fraction=0.05)
    assert full.item() == pytest.approx(depth_loss(pred[[0, 2]], target[[0, 2]]).item(), rel=1e-6)
    empty = depth_loss(pred.requires_grad_(True), torch.full_like(target, float("nan")))
    empty.backward()
    assert empty.item() == 0.0 and (pred.grad == 0).all()


def test_depth_layers_are_evenly_spaced_and_end_at_the_last():
    assert depth_layers(12) == [2, 5, 8, 11]
    assert depth_layers(24) == [5, 11, 17, 23]
    assert depth_layers(6) == [1, 2, 4, 5]
    assert depth_layers(2) == [0, 0, 1, 1]


@pytest.fixture(scope="module")
def tower():
    return build_model(preset_config("micro", 100, 16, 0, 1)).vision_model


HEAD_KINDS = ("dpt", "linear")


@pytest.mark.parametrize("head", HEAD_KINDS)
@pytest.mark.parametrize("size", [(32, 32), (48, 64)])
def test_head_output_has_the_input_size(tower, size, head):
    depth = Depth(DepthConfig(width=16, head=head), dim=32, num_layers=2)
    out = encode_images(tower, torch.randn(2, 3, *size), layers=depth.layers)
    assert out.grid == (size[0] // 8, size[1] // 8)
    pred = depth.predict(out.layers, out.grid, size)
    assert pred.shape == (2, 1, *size) and (pred >= 0).all()


@pytest.mark.parametrize("head", HEAD_KINDS)
def test_objective_uses_only_labelled_images(tower, head):
    torch.manual_seed(0)
    depth = Depth(DepthConfig(width=16, head=head), dim=32, num_layers=2)
    px = torch.randn(3, 3, 32, 32)
    out = encode_images(tower, px, layers=depth.layers)
    target, _ = targets(b=3, h=32, w=32)
    valid = torch.tensor([True, False, True])
    loss = depth.loss(out.layers, out.grid, (32, 32), target, valid)["loss_depth"]
    pred = depth.predict(out.layers, out.grid, (32, 32))
    assert loss.item() == pytest.approx(depth_loss(pred[[0, 2]], target[[0, 2]]).item(), rel=1e-5)
    tower.zero_grad(set_to_none=True)  # the module-scoped tower keeps other tests' gradients otherwise
    loss.backward()
    assert all(p.grad is not None for p in depth.parameters())
    assert tower.encoder.layers[0].mlp.fc1.weight.grad.abs().sum() > 0  # the tower learns from depth


@pytest.mark.parametrize("head", HEAD_KINDS)
def test_batch_without_depth_gives_a_zero_that_reaches_every_parameter(tower, head):
    depth = Depth(DepthConfig(width=16, head=head), dim=32, num_layers=2)
    out = encode_images(tower, torch.randn(2, 3, 32, 32), layers=depth.layers)
    loss = depth.loss(out.layers, out.grid, (32, 32), torch.full((2, 1, 32, 32), float("nan")),
                 torch.zeros(2, dtype=torch.bool))["loss_depth"]
    loss.backward()
    assert loss.item() == 0.0
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in depth.parameters())


def test_the_linear_head_reads_each_patch_from_its_own_tokens_alone():
    """Its output at a patch centre, before the bilinear upsampling, is the linear map of that patch's
    layer-normalised tokens: changing another patch's tokens leaves it unchanged (a DPT's 3x3 convs would not)."""
    torch.manual_seed(0)
    depth = Depth(DepthConfig(head="linear"), dim=32, num_layers=2)
    head = depth.head
    layers = [torch.randn(1, 16, 32) for _ in range(4)]
    grid = (4, 4)
    by_hand = torch.cat([F.layer_norm(x, (32,), n.weight, n.bias) for x, n in zip(layers, head.norms)], -1)
    by_hand = F.softplus(by_hand @ head.out.weight[:, :, 0, 0].T + head.out.bias)[0, :, 0].reshape(grid)
    at_centres = depth.predict(layers, grid, grid)[0, 0]  # one pixel per patch: the upsampling is the identity
    torch.testing.assert_close(at_centres, by_hand)
    moved = [x.clone() for x in layers]
    for x in moved:
        x[0, 5] += 3 * torch.randn(32)  # patch (1, 1); a constant shift would vanish in the LayerNorm
    changed = (depth.predict(moved, grid, grid)[0, 0] - at_centres).abs() > 1e-6
    assert changed.nonzero().tolist() == [[1, 1]]


def test_the_head_reads_the_blocks_it_is_given_and_refuses_what_it_cannot_read():
    last = Depth(DepthConfig(head="linear", layers=[-1]), dim=32, num_layers=6)
    assert last.layers == [5] and last.needs.layers == (5,) and len(last.head.norms) == 1
    assert Depth(DepthConfig(), dim=32, num_layers=6).layers == [1, 2, 4, 5]  # DPT's hooks
    with pytest.raises(ValueError, match="the dpt head reads 4 layers"):
        DepthConfig(layers=[5])
    with pytest.raises(MTVError, match=r"depth.layers \[6\]: the tower has 6 blocks"):
        Depth(DepthConfig(head="linear", layers=[6]), dim=32, num_layers=6)


def test_the_token_head_adds_its_own_term_on_the_final_tokens(tower):
    torch.manual_seed(0)
    cfg = DepthConfig(width=16, weight=8.0, token_weight=0.5)
    depth = Depth(cfg, dim=32, num_layers=2)
    assert depth.weights() == {"loss_depth": 8.0, "loss_depth_tokens": 4.0}
    out = encode_images(tower, torch.randn(3, 3, 32, 32), layers=depth.layers)  # [0, 0, 1, 1]
    target, _ = targets(b=3, h=32, w=32)
    valid = torch.ones(3, dtype=torch.bool)
    terms = depth.loss(out.layers, out.grid, (32, 32), target, valid, out.layers[-1])
    alone = depth_loss(depth.token_head([out.layers[-1]], out.grid, (32, 32)), target)
    assert set(terms) == {"loss_depth", "loss_depth_tokens"}
    assert terms["loss_depth_tokens"].item() == pytest.approx(alone.item())
    tower.zero_grad(set_to_none=True)  # the module-scoped tower keeps other tests' gradients otherwise
    terms["loss_depth_tokens"].backward()
    assert all(p.grad is None for p in depth.head.parameters())  # the token term trains only its head and the tower
    assert tower.encoder.layers[1].mlp.fc2.weight.grad.abs().sum() > 0
    # it survives the export's config round trip, and without it a model has exactly the DPT's parameters
    again = Depth(DepthConfig.model_validate(cfg.model_dump(mode="json")), dim=32, num_layers=2)
    again.load_state_dict(depth.state_dict())
    plain = Depth(DepthConfig(width=16), dim=32, num_layers=2)
    assert plain.token_head is None and set(depth.state_dict()) - set(plain.state_dict()) == {
        k for k in depth.state_dict() if k.startswith("token_head.")}


def test_config_rejects_unknown_keys():
    with pytest.raises(ValueError, match="extra"):
        DepthConfig(grad_weigth=0.5)
    assert DepthConfig().grad_weight == 0.5 and DepthConfig().scales == 4 and DepthConfig().weight == 1.0


def test_an_output_uncorrelated_with_depth_gets_no_lstsq_gradient_but_a_median_one():
    """The dead point behind a DPT head that never starts (docs/DIAGNOSIS.md round 7): the least-squares scale of
    an output uncorrelated with the target is 0, and the gradient is that scale times the residual."""
    rows = torch.linspace(1.0, 2.0, 16)[:, None].expand(16, 16)  # inverse depth that grows down the image
    target = rows[None].clone()
    cols = torch.linspace(-1.0, 1.0, 16)[None, :].expand(16, 16)  # varies across, not down: uncorrelated
    for normalisation, dead in (("lstsq", True), ("median", False)):
        pred = (1.0 + 0.1 * cols)[None].clone().requires_grad_(True)
        depth_loss(pred, target, normalisation=normalisation, grad_weight=0.0).backward()
        assert (pred.grad.abs().max() < 1e-6) == dead, normalisation
    pred = (1.0 + 0.1 * cols + 0.01 * rows)[None].clone().requires_grad_(True)  # a little correlation
    depth_loss(pred, target, grad_weight=0.0).backward()
    assert pred.grad.abs().max() > 1e-4
