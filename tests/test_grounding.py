"""Grounding: name ids, region-text loss against a double loop (also across two ranks), L1 + GIoU, the prompter
and the objective's handling of images without boxes."""

import hashlib
import math
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from mtv.losses.grounding import box_loss, name_id, region_text_loss
from mtv.models.prompter import Prompter, xyxy_to_cxcywh
from mtv.models.siglip import build_model, preset_config
from mtv.models.vision import encode_images
from mtv.objectives.grounding import Grounding, GroundingConfig

D, E = 32, 24


def unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def naive_region_text(regions, entities, names, t, b):
    """-(1/Q) sum_i sum_j log sigmoid(z_ij (t <r_i, e_j> + b)), z = +1 iff the names are equal."""
    total = 0.0
    for i in range(len(regions)):
        for j in range(len(entities)):
            z = 1.0 if names[i] == names[j] else -1.0
            logit = t * float(regions[i] @ entities[j]) + b
            total += math.log1p(math.exp(-z * logit))
    return total / len(regions)


def test_name_id_is_a_stable_hash_of_the_normalised_phrase():
    want = int.from_bytes(hashlib.blake2b(b"the red dog", digest_size=8).digest(), "little", signed=True)
    assert name_id("the red dog") == want
    assert name_id("  The  Red dog. ") == want and name_id("the red dogs") != want


def test_region_text_loss_matches_double_loop_and_spares_duplicate_names():
    names = ["dog", "cat", "dog", "tree", "cat"]
    regions, entities = unit(5, E, seed=1), unit(5, E, seed=2)
    ids = torch.tensor([name_id(n) for n in names])
    got = region_text_loss(regions, entities, ids, torch.tensor(10.0), torch.tensor(-10.0))
    assert got.item() == pytest.approx(naive_region_text(regions, entities, names, 10.0, -10.0), rel=1e-5)
    # had the two dogs been negatives of each other, the loss would differ
    unique = torch.arange(5)
    other = region_text_loss(regions, entities, unique, torch.tensor(10.0), torch.tensor(-10.0))
    assert other.item() != pytest.approx(got.item(), rel=1e-3)


def test_box_loss_on_known_boxes():
    a = torch.tensor([[0.0, 0.0, 0.2, 0.2]])
    b = torch.tensor([[0.5, 0.5, 0.7, 0.9]])
    # identical boxes: GIoU 1, L1 0, so the loss is 0
    assert box_loss(xyxy_to_cxcywh(b), xyxy_to_cxcywh(b)).item() == pytest.approx(0.0, abs=1e-7)
    # disjoint: IoU 0, union 0.04 + 0.08, enclosing box 0.7 x 0.9, GIoU = 0 - (0.63 - 0.12) / 0.63
    giou = -(0.63 - 0.12) / 0.63
    assert box_loss(xyxy_to_cxcywh(a), xyxy_to_cxcywh(b), l1_weight=0, giou_weight=1).item() == pytest.approx(1 - giou)
    l1 = abs(0.1 - 0.6) + abs(0.1 - 0.7) + abs(0.2 - 0.2) + abs(0.2 - 0.4)
    assert box_loss(xyxy_to_cxcywh(a), xyxy_to_cxcywh(b)).item() == pytest.approx(5 * l1 + 2 * (1 - giou), rel=1e-5)


def test_prompter_shapes_and_box_range():
    prompter = Prompter(D, E, layers=2)
    tokens = torch.randn(3, 12, D)
    boxes = torch.tensor([0.1, 0.2, 0.5, 0.9]).expand(3, 4, 4)
    assert prompter.regions(tokens, (3, 4), boxes).shape == (3, 4, E)
    located = prompter.locate(tokens, (3, 4), unit(3, 4, E))
    assert located.shape == (3, 4, 4) and ((located > 0) & (located < 1)).all()


def batch(seed=0):
    """3 images of 4 box slots; image 1 has no boxes; names repeat across images."""
    g = torch.Generator().manual_seed(seed)
    corners = torch.rand(3, 4, 2, 2, generator=g).sort(dim=2).values
    boxes = torch.stack([corners[..., 0, 0], corners[..., 0, 1], corners[..., 1, 0], corners[..., 1, 1]], -1)
    valid = torch.tensor([[True, False, True, True], [False] * 4, [True, True, False, False]])
    names = [["dog", "-", "cat", "dog"], ["-"] * 4, ["cat", "tree", "-", "-"]]
    ids = torch.tensor([[name_id(n) for n in row] for row in names])
    return torch.randn(3, 16, D, generator=g), boxes, valid, unit(3, 4, E, seed=seed + 1), ids


def test_objective_equals_per_image_computation_and_skips_images_without_boxes():
    torch.manual_seed(0)
    grounding = Grounding(GroundingConfig(), D, E)
    tokens, boxes, valid, entities, ids = batch()
    out = grounding.loss(tokens, (4, 4), boxes, valid, entities, ids)
    # each image alone, only its valid boxes: padding and other images must not matter
    regions, located = [], []
    for i in (0, 2):
        v = valid[i]
        regions.append(grounding.prompter.regions(tokens[i:i + 1], (4, 4), boxes[i:i + 1, v])[0])
        located.append(grounding.prompter.locate(tokens[i:i + 1], (4, 4), entities[i:i + 1, v])[0])
    regions, located = F.normalize(torch.cat(regions), dim=-1), torch.cat(located)
    want = naive_region_text(regions.detach(), entities[valid], ids[valid].tolist(), 10.0, -10.0)
    assert out["loss_grounding"].item() == pytest.approx(want, rel=1e-5)
    assert out["loss_box"].item() == pytest.approx(box_loss(located, xyxy_to_cxcywh(boxes[valid])).item(), rel=1e-5)
    assert grounding.weights() == {"loss_grounding": 1.0, "loss_box": 1.0}


def test_batch_without_boxes_gives_finite_zeros_with_gradients():
    grounding = Grounding(GroundingConfig(), D, E)
    tokens, boxes, _, entities, ids = batch()
    out = grounding.loss(tokens, (4, 4), boxes, torch.zeros(3, 4, dtype=torch.bool), entities, ids)
    assert set(out) == {"loss_grounding", "loss_box"}
    assert all(v.item() == 0.0 and torch.isfinite(v) for v in out.values())
    sum(out.values()).backward()
    assert all(p.grad is not None and (p.grad == 0).all() for p in grounding.parameters())


def test_switched_off_branches_are_neither_built_nor_computed():
    tokens, boxes, valid, entities, ids = batch()
    only_boxes = Grounding(GroundingConfig(region_text=False), D, E)
    out = only_boxes.loss(tokens, (4, 4), boxes, valid, entities, ids)
    assert set(out) == {"loss_box"} and not hasattr(only_boxes, "logit_bias")
    out["loss_box"].backward()
    assert all(p.grad is not None for p in only_boxes.parameters())  # nothing DDP would call unused
    with pytest.raises(ValueError, match="region_text or text_to_box"):
        GroundingConfig(region_text=False, text_to_box=False)
    with pytest.raises(ValueError, match="extra"):
        GroundingConfig(max_box=3)


def test_logit_scale_and_bias_are_1d_for_fsdp_and_heads_saved_as_scalars_still_load():
    head = Grounding(GroundingConfig(init_logit_scale=10.0, init_logit_bias=-10.0), 32, 16)
    assert head.logit_scale.shape == head.logit_bias.shape == (1,)  # FSDP2 shards no 0-d parameter
    old = {k: v.reshape(()) if k in ("logit_scale", "logit_bias") else v for k, v in head.state_dict().items()}
    old["logit_scale"], old["logit_bias"] = torch.tensor(math.log(20.0)), torch.tensor(-5.0)
    fresh = Grounding(GroundingConfig(), 32, 16)
    fresh.load_state_dict(old)
    assert fresh.logit_scale.tolist() == pytest.approx([math.log(20.0)]) and fresh.logit_bias.tolist() == [-5.0]


def test_trains_the_towers_and_predicts_boxes():
    model = build_model(preset_config("micro", 100, 16, 0, 1))
    grounding = Grounding(GroundingConfig(), 32, 32)
    vision = encode_images(model.vision_model, torch.randn(2, 3, 32, 32))
    phrases = torch.randint(2, 100, (2 * 3, 16))
    entities = F.normalize(model.text_model(input_ids=phrases).pooler_output, dim=-1).reshape(2, 3, 32)
    boxes = torch.tensor([[0.1, 0.1, 0.6, 0.8], [0.5, 0.2, 0.9, 0.4], [0.0, 0.0, 1.0, 1.0]]).expand(2, 3, 4)
    valid = torch.tensor([[True, True, False], [True, False, False]])
    ids = torch.tensor([[1, 2, 3], [1, 4, 5]])
    out = grounding.loss(vision.tokens, vision.grid, boxes, valid, entities, ids)
    sum(out.values()).backward()
    assert model.vision_model.encoder.layers[0].mlp.fc1.weight.grad.abs().sum() > 0
    assert model.text_model.encoder.layers[0].mlp.fc1.weight.grad.abs().sum() > 0
    predicted = grounding.predict_boxes(vision.tokens[:1], vision.grid, entities[0])
    assert predicted.shape == (3, 4) and (predicted[:, :2] <= predicted[:, 2:]).all()
    assert ((predicted >= 0) & (predicted <= 1)).all()


# Runs in a fresh interpreter that imports only the loss, so two ranks start in about a second.
RANK_WORKER = """
import os, sys, torch, torch.distributed as dist
from mtv.losses.grounding import region_text_loss
torch.set_num_threads(1)
regions, entities, ids = torch.load(sys.argv[1])
rank = int(os.environ["RANK"])
dist.init_process_group("gloo")
out = {}
for split in (3, 5):  # with 5, rank 1 holds no boxes and must still join the gather
    part = slice(0, split) if rank == 0 else slice(split, None)
    r, e = regions[part].clone().requires_grad_(), entities[part].clone().requires_grad_()
    loss = region_text_loss(r, e, ids[part], torch.tensor(10.0), torch.tensor(-10.0), dist.group.WORLD)
    (loss * r.shape[0]).backward()  # the un-normalised sum, so gradients compare across ranks
    out[split] = (loss.detach(), r.grad, e.grad)
torch.save(out, f"{sys.argv[2]}.{rank}")
dist.barrier()
os._exit(0)  # skip the interpreter teardown, in which gloo can abort a finished rank
"""


@pytest.mark.slow
def test_two_ranks_equal_one_process_on_the_global_batch(tmp_path):
    """Each rank divides by its own region count Q_r; undone, the ranks' sums add up to the single-process sum,
    and gradients through the differentiable gather are the single-process ones, for every rank's entities."""
    names = ["dog", "cat", "dog", "tree", "cat"]
    regions, entities = unit(5, E, seed=1), unit(5, E, seed=2)
    ids = torch.tensor([name_id(n) for n in names])
    torch.save((regions, entities, ids), tmp_path / "batch.pt")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
           "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", RANK_WORKER, str(tmp_path / "batch.pt"), str(tmp_path / "out")],
                              env={**env, "RANK": str(rank)}, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read()
    ranks = [torch.load(tmp_path / f"out.{rank}") for rank in (0, 1)]
    for split in (3, 5):
        r, e = regions.clone().requires_grad_(), entities.clone().requires_grad_()
        whole = region_text_loss(r, e, ids, torch.tensor(10.0), torch.tensor(-10.0))
        (5 * whole).backward()
        (l0, gr0, ge0), (l1, gr1, ge1) = ranks[0][split], ranks[1][split]
        assert (split * l0 + (5 - split) * l1).item() == pytest.approx(5 * whole.item(), rel=1e-5)
        assert torch.allclose(torch.cat([gr0, gr1]), r.grad, atol=1e-5)
        assert torch.allclose(torch.cat([ge0, ge1]), e.grad, atol=1e-5)
