"""The measurements behind docs/DIAGNOSIS.md: why a trained encoder does (not) beat its untrained floor on the
world suite. Each prints figures; none changes a file.

    python benchmarks/diagnose_world.py teacher RUN_DIR         # SSL teacher-target and student entropy
    python benchmarks/diagnose_world.py depth-head RUN_DIR      # does the DPT head's output follow depth at all
    python benchmarks/diagnose_world.py layers EXPORT_DIR       # seg and geo probes on every layer, vs the floor
    python benchmarks/diagnose_world.py depth-budget EXPORT_DIR # the depth probe at other lr / epoch budgets
    python benchmarks/diagnose_world.py geo-readouts EXPORT_DIR # geo recall of other feature readouts, vs the floor

``--val`` and ``--train`` name the world splits (default: the demo's), ``--max-samples`` caps each.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import tempfile

import torch
import torch.nn.functional as F

from common import machine
from mtv.eval import suite
from mtv.data.decode import open_image
from mtv.eval.benchmarks.world import load_world
from mtv.eval.correspondence import geo_metrics, score_geo_pair
from mtv.eval.encoders import load_encoder
from mtv.eval.floor import untrained_model
from mtv.eval.profiles import PROFILES, probe3d_layers
from mtv.eval.segmentation import evaluate_seg, train_linear_seg
from mtv.models.depth_head import depth_layers
from mtv.models.tokenizer import load_processor


def _entropy(p: torch.Tensor) -> float:
    return -(p * p.clamp_min(1e-12).log()).sum(-1).mean().item()


def _mean_cosine(x: torch.Tensor) -> float:
    z = torch.nn.functional.normalize(x.float(), dim=-1)
    n = len(z)
    return ((z @ z.T).sum() - n).item() / (n * (n - 1))


def _run(a: argparse.Namespace) -> tuple:
    """A run directory's newest checkpoint: state, config, model (eval mode), held-out pixels and their split."""
    from transformers import SiglipConfig, SiglipModel

    from mtv.config import TrainConfig
    from mtv.train import checkpoint

    state = checkpoint.load(a.path)
    model = SiglipModel(SiglipConfig.from_dict(state["model_config"]))
    model.load_state_dict(state["model"])
    model.eval()
    split = load_world(a.val, "test", a.max_samples)
    processor = load_processor(f"{a.path}/processor")
    px = processor(images=[open_image(s) for s in split.images], return_tensors="pt")["pixel_values"]
    return state, TrainConfig.model_validate(state["config"]), model, px, split


@torch.no_grad()
def teacher(a: argparse.Namespace) -> None:
    """How much the DINO targets say: near log K the student has nothing to learn from them."""
    from mtv.losses.dino import sinkhorn_knopp
    from mtv.models.vision import encode_images
    from mtv.objectives.self_supervised import SelfSupervised

    state, train_cfg, model, px, _ = _run(a)
    cfg = train_cfg.ssl
    ssl = SelfSupervised(model.vision_model, model.config.vision_config.hidden_size, cfg)
    ssl.load_state_dict(state["objectives"]["ssl"])
    ssl.eval()
    pooled = encode_images(ssl.teacher["tower"], px).pooled
    logits = ssl.teacher["head"](pooled)
    student = ssl.head(encode_images(model.vision_model, px).pooled)
    print(f"step {state['step']}, {cfg.prototypes} prototypes (log K = {math.log(cfg.prototypes):.2f}), "
          f"{len(px)} held-out images; teacher logits span {logits.min():.3f} .. {logits.max():.3f}")
    # Sinkhorn balances each prototype over the batch: images the head cannot tell apart get uniform targets.
    for name, x in (("pooled tokens", pooled), ("bottleneck", ssl.teacher["head"].mlp(pooled))):
        print(f"  teacher {name}: mean cosine between two images {_mean_cosine(x):.4f}")
    for temp in dict.fromkeys((cfg.teacher_temp_start, cfg.teacher_temp_end)):  # the schedule's ends, once each
        q = sinkhorn_knopp(logits, temp, cfg.sinkhorn_iters)
        print(f"  teacher targets at temperature {temp}: entropy {_entropy(q):.3f}, "
              f"mean top probability {q.max(1).values.mean():.4f}")
    print(f"  student predictions at temperature {cfg.student_temp}: entropy "
          f"{_entropy((student / cfg.student_temp).softmax(-1)):.3f}")


@torch.no_grad()
def depth_head(a: argparse.Namespace) -> None:
    """The scale-shift-invariant loss aligns the head's output with the least-squares scale s, and its gradient is
    s times the residual: an output uncorrelated with depth (s near 0) gets no gradient, and the head stays there."""
    import numpy as np

    from mtv.losses.depth import valid_mask
    from mtv.models.vision import encode_images
    from mtv.objectives.depth import Depth

    state, cfg, model, px, split = _run(a)
    depth = Depth.build(cfg.depth, model)
    depth.load_state_dict(state["objectives"]["depth"])
    depth.eval()
    out = encode_images(model.vision_model, px, layers=depth.layers)
    pred = depth.predict(out.layers, out.grid, tuple(px.shape[-2:]))[:, 0]
    inverse = torch.stack([torch.from_numpy(1 / np.asarray(split.depth(i), dtype=np.float32))
                           for i in range(len(px))])
    if inverse.shape[-2:] != pred.shape[-2:]:
        raise SystemExit(f"{a.val}: depth maps are {tuple(inverse.shape[-2:])}, images {tuple(pred.shape[-2:])}")
    mask = valid_mask(inverse)
    corr = np.array([torch.corrcoef(torch.stack([pred[i][mask[i]], inverse[i][mask[i]]]))[0, 1].item()
                     for i in range(len(px))])
    print(f"step {state['step']}, {len(px)} held-out images: correlation of the head's output with inverse depth "
          f"median {np.median(corr):.3f}, negative in {np.mean(corr < 0):.0%} of images; output spread within an "
          f"image {pred.flatten(1).std(1).mean():.4f}")


def _twins(export: str) -> list[tuple[str, str]]:
    return [("trained", export), ("untrained floor", str(untrained_model(export)[0]))]


def _geo(pairs: list, a: torch.Tensor, fa: suite.Features, b: torch.Tensor, fb: suite.Features) -> dict:
    """The geometric probe's metrics when pair (i, j) matches tokens ``a[i]`` (of ``fa``'s images) to ``b[j]``."""
    fmap = lambda x, g: x.T.reshape(-1, *g)  # noqa: E731
    return geo_metrics([score_geo_pair(p, fmap(a[p.a], fa.grid), fa.sizes[p.a], fmap(b[p.b], fb.grid), fb.sizes[p.b])
                        for p in pairs])[0]


def layers(a: argparse.Namespace) -> None:
    """The seg probe (on layer-normalised tokens) and nearest-neighbour geometric matching on every layer."""
    data = suite.WorldData(a.val, a.train, a.max_samples, 0)
    for name, path in _twins(a.path):
        encoder = load_encoder(path)
        n = encoder.num_layers
        store = suite.FeatureStore(encoder, list(range(n)), 64, True, False)
        ftr, fte, fb = store(data.train), store(data.test), store(data.test.partner)
        idx_tr, maps_tr = suite._dense_labels(data.train, ftr, data.train.seg, "seg")
        idx_te, maps_te = suite._dense_labels(data.test, fte, data.test.seg, "seg")
        labels = torch.stack([suite._resize_nearest(m, suite._train_size(ftr)).long() for m in maps_tr])
        classes = len(data.test.seg_classes)
        for layer in [*range(n), "final"]:
            pick = (lambda f: f.tokens) if layer == "final" else (lambda f, k=layer: f.layers[:, k])
            tr, te, tb = (F.layer_norm(pick(f).float(), pick(f).shape[-1:]) for f in (ftr, fte, fb))
            probe = train_linear_seg(tr[idx_tr], ftr.grid, labels, classes, PROFILES["cpu"].seg_budget)
            seg = evaluate_seg(probe, te[idx_te], fte.grid, [m.long() for m in maps_te], classes)["miou"]
            geo = _geo(data.test.geo_pairs, te, fte, tb, fb)
            print(f"{name:16s} layer {layer!s:5s} seg mIoU {seg:.1%}  geo recall@0.05 {geo['corr_geo_recall']:.1%}"
                  f"  @0.10 {geo['corr_geo_recall_10']:.1%}", flush=True)


def geo_readouts(a: argparse.Namespace) -> None:
    """Geometric recall when the matcher reads something other than the final tokens: block 0; Probe3D's
    ``multilayer`` (its four blocks concatenated raw); the depth probe's four blocks and every block, each
    L2-normalised before concatenation (the mean of their cosines)."""
    data = suite.WorldData(a.val, a.train, a.max_samples, 0)
    for name, path in _twins(a.path):
        encoder = load_encoder(path)
        n = encoder.num_layers
        store = suite.FeatureStore(encoder, list(range(n)), 64, True, False)
        fa, fb = store(data.test), store(data.test.partner)
        readouts = {"final tokens": None, "block 0": ("raw", [0]),
                    f"Probe3D multilayer {probe3d_layers(n)}": ("raw", probe3d_layers(n)),
                    f"mean cosine of {depth_layers(n)}": ("unit", depth_layers(n)),
                    "mean cosine of every block": ("unit", list(range(n)))}
        for label, how in readouts.items():
            def read(f):
                if how is None:
                    return f.tokens.float()
                parts = [f.layers[:, k].float() for k in how[1]]
                return torch.cat([F.normalize(x, dim=-1) for x in parts] if how[0] == "unit" else parts, -1)
            m = _geo(data.test.geo_pairs, read(fa), fa, read(fb), fb)
            print(f"{name:16s} {label:34s} recall@0.05 {m['corr_geo_recall']:.2%}  @0.10 {m['corr_geo_recall_10']:.2%}"
                  f"  ratio test {m['corr_geo_recall_ratio']:.2%}", flush=True)


def depth_budget(a: argparse.Namespace) -> None:
    """Whether a longer or faster-learning depth probe closes the gap to the floor."""
    cpu = PROFILES["cpu"]
    base = cpu.depth_budget
    with tempfile.TemporaryDirectory() as out:
        for lr, epochs in ((base.lr, base.epochs), (4 * base.lr, base.epochs), (4 * base.lr, 3 * base.epochs)):
            PROFILES["cpu"] = cpu.model_copy(update={"depth_budget": dataclasses.replace(base, lr=lr, epochs=epochs)})
            cells = []
            for name, path in _twins(a.path):
                m = suite.run_suite(path, a.val, out, "depth", train=a.train, max_samples=a.max_samples,
                                    floor=False, progress=False)["metrics"]
                cells.append(f"{name} RMSE {m['depth_rmse']:.3f}, aligned AbsRel {m['depth_aligned_absrel']:.4f}")
            print(f"lr {lr:g}, {epochs} epochs: " + "; ".join(cells), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=("teacher", "depth-head", "layers", "depth-budget", "geo-readouts"))
    p.add_argument("path", help="a run directory (teacher, depth-head) or an export (layers, depth-budget, "
                   "geo-readouts)")
    p.add_argument("--val", default="runs/demo/world/val")
    p.add_argument("--train", default="runs/demo/world/train")
    p.add_argument("--max-samples", type=int, default=500)
    a = p.parse_args()
    print(machine())
    commands = {"teacher": teacher, "depth-head": depth_head, "layers": layers, "depth-budget": depth_budget,
                "geo-readouts": geo_readouts}
    commands[a.what](a)


if __name__ == "__main__":
    main()
