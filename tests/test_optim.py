"""The optimiser recipe (`mtv.train.optim`) and the schedule table (`mtv.train.schedule`): per-tensor lr under
layer-wise decay, DINOv2's weight-decay cosine, batch-size lr scaling, the prototype freeze, resume, bad values,
and that the defaults step exactly as the plain AdamW before the recipe did."""

from __future__ import annotations

import copy
import functools
import math

import numpy as np
import pytest
import torch

from fixtures import train_tree, write_toy_shards
from mtv.config import build_config
from mtv.errors import MTVError
from mtv.models.siglip import build_model, preset_config
from mtv.objectives.multitask import MultiTask
from mtv.train import checkpoint, train
from mtv.train.logger import read_metrics
from mtv.train.optim import build_optimizer, scaled_lr
from mtv.train.schedule import ScheduleTable, warmup_cosine

SSL_SMALL = {"n_local": 2, "prototypes": 64, "head_hidden": 32}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("toy")
    write_toy_shards(folder, n_shards=2, per_shard=24)
    return folder


def _task(**optim):
    """A micro SigLIP (2 vision blocks) with every objective on, its optimiser and schedule table."""
    cfg = build_config({"run_dir": "unused", "data": {"train": "unused"}, "steps": 100, "batch_size": 4,
                        "model": {"preset": "micro"}, "optim": {"warmup_steps": 10, **optim},
                        "ssl": SSL_SMALL})
    task = MultiTask(build_model(preset_config("micro", 200, 64, 0, 1)), cfg)
    opt, rules = build_optimizer(task, cfg)
    return cfg, task, opt, ScheduleTable(cfg, task, rules, scaled_lr(cfg.optim, 4))


def _group_of(opt) -> dict[int, dict]:
    return {id(p): g for g in opt.param_groups for p in g["params"]}


def test_each_tensor_gets_the_layer_decayed_lr_of_dinov2():
    """DINOv2's rule, written from the module tree: embeddings (and the mask token) are layer 0, block i is
    layer i + 1, the rest of the vision tower layer L + 1; lr x decay^(L + 1 - layer), x patch_mult on the patch
    embedding; everything outside the vision tower trains at the full lr."""
    decay, patch_mult, step = 0.7, 0.2, 30
    cfg, task, opt, table = _task(layer_decay=decay, patch_embed_lr_mult=patch_mult)
    row = table.row(step)
    row.apply(opt)
    vision = task.model.vision_model
    blocks = vision.encoder.layers
    L = len(blocks)
    layer = {id(p): 0 for p in vision.embeddings.parameters()}
    layer[id(task.ssl.mask_token)] = 0
    for i, block in enumerate(blocks):
        layer.update({id(p): i + 1 for p in block.parameters()})
    patch = {id(p) for p in vision.embeddings.patch_embedding.parameters()}
    vision_ids = {id(p) for p in vision.parameters()}
    peak = cfg.optim.lr * warmup_cosine(step, 10, 100)
    groups = _group_of(opt)
    checked = 0
    for name, p in task.named_parameters():
        if not p.requires_grad:
            assert id(p) not in groups, name  # the EMA teacher is not optimised
            continue
        k = layer.get(id(p), L + 1 if id(p) in vision_ids else None)
        expected = peak if k is None else peak * decay ** (L + 1 - k) * (patch_mult if id(p) in patch else 1.0)
        assert groups[id(p)]["lr"] == pytest.approx(expected, rel=1e-12), name
        checked += 1
    assert checked == sum(1 for p in task.parameters() if p.requires_grad)
    assert row.lr == pytest.approx(peak)
    assert groups[id(vision.embeddings.patch_embedding.weight)]["lr"] == pytest.approx(peak * decay ** 3 * 0.2)


def test_weight_decay_follows_dinov2s_cosine_and_spares_biases_norms_and_named_tensors():
    cfg, task, opt, table = _task(weight_decay=0.04, weight_decay_end=0.4, no_weight_decay=["position_embedding"])
    # DINOv2's CosineScheduler(base_value=0.04, final_value=0.4, total_iters=100), as it builds the array
    iters = np.arange(100)
    reference = 0.4 + 0.5 * (0.04 - 0.4) * (1 + np.cos(np.pi * iters / len(iters)))
    for step in (0, 1, 37, 50, 99):
        row = table.row(step)
        row.apply(opt)
        assert row.weight_decay == pytest.approx(reference[step], rel=1e-12)
        groups = _group_of(opt)
        for name, p in task.named_parameters():
            if p.requires_grad:
                spared = p.ndim < 2 or "position_embedding" in name
                assert groups[id(p)]["weight_decay"] == (0.0 if spared else pytest.approx(reference[step])), name
    _, _, opt, table = _task(weight_decay=0.03)
    assert {table.row(s).weight_decay for s in (0, 50, 99)} == {0.03}  # the default keeps it constant


@pytest.mark.parametrize("rule, expected", [("none", 1e-3), ("sqrt", 1e-3 * math.sqrt(512 / 1024)),
                                            ("linear", 1e-3 * 512 / 1024)])
def test_lr_scales_with_the_global_batch(rule, expected):
    cfg = build_config({"run_dir": "u", "data": {"train": "u"}, "steps": 10, "batch_size": 64,
                        "optim": {"warmup_steps": 1, "lr_scaling": rule, "lr_reference_batch": 1024}})
    assert scaled_lr(cfg.optim, 512) == pytest.approx(expected, rel=1e-12)


@pytest.mark.slow
def test_the_prototype_layer_stays_still_while_frozen_and_trains_after(tmp_path, data):
    """lr 0 (DINOv2's last-layer schedule) for the first 2 steps: the prototypes are bit-equal after steps 1 and
    2 while the rest of the head moves; step 3 moves them. Logged as frozen_ssl_prototypes."""
    tree = train_tree(tmp_path / "run", data, steps=4, ckpt_every=1, keep_ckpts=4, optim={"warmup_steps": 0},
                      ssl={**SSL_SMALL, "freeze_prototypes_steps": 2})
    train(build_config(tree), progress=False)
    states = [checkpoint.load(p)["objectives"]["ssl"] for p in checkpoint.checkpoints(tmp_path / "run")]
    proto, mlp = "head.prototypes.weight", "head.mlp.0.weight"
    assert torch.equal(states[0][proto], states[1][proto])
    assert not torch.equal(states[0][mlp], states[1][mlp])
    assert not torch.equal(states[1][proto], states[2][proto])
    assert not torch.equal(states[2][proto], states[3][proto])
    assert [r["frozen_ssl_prototypes"] for r in read_metrics(tmp_path / "run")] == [1.0, 1.0, 0.0, 0.0]


@pytest.mark.slow
def test_resume_is_exact_with_layer_decay_and_the_weight_decay_schedule(tmp_path, data):
    recipe = {"warmup_steps": 1, "layer_decay": 0.8, "patch_embed_lr_mult": 0.5, "weight_decay": 0.04,
              "weight_decay_end": 0.4}
    tree = train_tree(tmp_path / "run", data, steps=6, ckpt_every=3, keep_ckpts=2, optim=recipe,
                      ssl={**SSL_SMALL, "freeze_prototypes_steps": 2})
    train(build_config(tree), progress=False)
    whole = read_metrics(tmp_path / "run")
    (tmp_path / "run" / "checkpoints" / "step_00000006.pt").unlink()
    train(build_config(tree), resume=True, progress=False)
    resumed = read_metrics(tmp_path / "run")
    assert [r["step"] for r in resumed] == list(range(1, 7))
    for key in ("loss", "loss_vl", "loss_dino", "lr", "weight_decay", "teacher_momentum", "frozen_ssl_prototypes"):
        assert [r[key] for r in resumed] == [r[key] for r in whole], key
    assert resumed[5]["weight_decay"] == pytest.approx(0.4 + 0.5 * (0.04 - 0.4) * (1 + math.cos(math.pi * 5 / 6)))


@pytest.mark.parametrize("optim, ssl, words", [
    ({"layer_decay": 0.0}, {}, r"optim\.layer_decay: Input should be greater than 0"),
    ({"layer_decay": 1.5}, {}, r"optim\.layer_decay: Input should be less than or equal to 1"),
    ({"patch_embed_lr_mult": -1}, {}, r"optim\.patch_embed_lr_mult: Input should be greater than or equal to 0"),
    ({"weight_decay_end": -0.1}, {}, r"optim\.weight_decay_end: Input should be greater than or equal to 0"),
    ({"lr_scaling": "cubic"}, {}, r"optim\.lr_scaling: Input should be 'none', 'sqrt' or 'linear'"),
    ({"no_weight_decay": ["("]}, {}, r"optim\.no_weight_decay: '\(' is not a regular expression"),
    ({}, {"freeze_prototypes_steps": -1}, r"ssl\.freeze_prototypes_steps: Input should be greater than or equal"),
])
def test_bad_recipe_values_are_one_line_errors_naming_the_key(optim, ssl, words):
    with pytest.raises(MTVError, match=words) as e:
        build_config({"run_dir": "u", "data": {"train": "u"}, "steps": 10, "batch_size": 4,
                      "optim": {"warmup_steps": 1, **optim}, "ssl": ssl})
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("optim, ssl, words", [
    ({"no_weight_decay": ["no_such_tensor"]}, {}, r"^optim\.no_weight_decay: 'no_such_tensor' matches no trainable "
                                                  r"parameter \(names look like .*\); fix or remove it$"),
    ({}, {"freeze_prototypes_steps": 100}, r"^ssl\.freeze_prototypes_steps=100 covers every SSL step \(100\): the "
                                           r"prototypes would never train; lower it$"),
])
def test_recipe_values_that_fit_no_model_are_one_line_errors(optim, ssl, words):
    with pytest.raises(MTVError, match=words):
        _task(**optim) if not ssl else _ssl_task(ssl)


def _ssl_task(ssl: dict):
    cfg = build_config({"run_dir": "u", "data": {"train": "u"}, "steps": 100, "batch_size": 4,
                        "model": {"preset": "micro"}, "optim": {"warmup_steps": 1},
                        "ssl": {**SSL_SMALL, **ssl}})
    build_optimizer(MultiTask(build_model(preset_config("micro", 200, 64, 0, 1)), cfg), cfg)


def test_the_default_recipe_steps_exactly_as_the_plain_adamw_it_replaced():
    """Before the recipe existed, a run had one AdamW: weight decay on every trainable tensor of 2-D or more, none
    on the rest, and a LambdaLR warm-up cosine of the run's steps. Fed the same gradients, the default recipe
    (with the SSL head and its mask token in the model) must move every parameter bit for bit as that did."""
    cfg, task, opt, table = _task()
    before = copy.deepcopy(task)
    trainable = [p for p in before.parameters() if p.requires_grad]
    plain = torch.optim.AdamW([{"params": [p for p in trainable if p.ndim >= 2], "weight_decay": cfg.optim.weight_decay},
                               {"params": [p for p in trainable if p.ndim < 2], "weight_decay": 0.0}],
                              lr=cfg.optim.lr, betas=cfg.optim.betas)
    sched = torch.optim.lr_scheduler.LambdaLR(plain, functools.partial(
        warmup_cosine, warmup=cfg.optim.warmup_steps, total=cfg.steps, min_ratio=cfg.optim.min_lr_ratio))
    g = torch.Generator().manual_seed(0)
    for step in range(12):  # across the end of the 10-step warm-up
        for p, q in zip(task.parameters(), before.parameters(), strict=True):
            if p.requires_grad:
                p.grad = torch.randn(p.shape, generator=g)
                q.grad = p.grad.clone()
        table.row(step).apply(opt)
        opt.step()
        plain.step()
        sched.step()
    for (name, p), q in zip(task.named_parameters(), before.parameters(), strict=True):
        assert torch.equal(p, q), name
