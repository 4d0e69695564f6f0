"""The probe suite behind ``mtv eval --suite``: a registry of probes and a runner that feeds them frozen features.

Features (attention-pooled embedding, final patch tokens, four intermediate layers) come from one frozen pass
per split under ``torch.no_grad()`` and are kept in memory for every probe (``cache=False`` recomputes them for
each probe instead — the benchmark's baseline). Probes train with fixed seeds and budgets that the report records.

Data: ``world`` reads MTV World shards (``data`` = held-out split, ``train`` = the probes' training split);
``real`` reads the real benchmarks under one root folder (`mtv.eval.benchmarks.real.REAL_LAYOUT`). A probe that
cannot run (no heads, no training split, a benchmark not on disk in a preset suite) is listed in ``not_run`` with why.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from tqdm import tqdm

from mtv.errors import MTVError, SkipSample, writable_dir
from mtv.eval import Embedded, not_applicable, score_embeddings
from mtv.data.decode import open_image
from mtv.eval.benchmarks import Split
from mtv.eval.benchmarks.real import RealData
from mtv.eval.benchmarks.world import load_world
from mtv.eval.correspondence import (GEO_PROTOCOLS, MTV, PROBE3D, geo_metrics, probe3d_metrics, score_geo_pair,
                                     score_probe3d_pair)
from mtv.eval.depth_probe import evaluate_depth_probe, train_depth_probe
from mtv.eval.encoders import Encoder, load_encoder
from mtv.eval.features import ImageView, embed_texts, view_pixels
from mtv.eval.floor import floor_report_dir, publish, untrained_model
from mtv.eval.heads import eval_depth_head, eval_grounding
from mtv.eval.keypoints import (CONVENTIONS, DESCRIPTIONS, VIEWS, Convention, hits, pck_metrics, scored_points,
                                transfer)
from mtv.eval.metrics import IGNORE, effective_rank
from mtv.eval.profiles import PROFILES, ProbeProfile, profile, profile_layers
from mtv.eval.priors import depth_prior, geo_prior, sem_prior, seg_prior
from mtv.eval.report import versions, write_report
from mtv.eval.segmentation import ProbeBudget, evaluate_seg, train_linear_seg
from mtv.eval.zeroshot import undefined_ks
from mtv.heads import load_heads
from mtv.models.depth_head import depth_layers
from mtv.progress import on_terminal

PROBES = ("zeroshot", "retrieval", "seg", "depth", "corr_geo", "corr_sem", "depth_head", "grounding")
NEEDS_HEADS = ("depth_head", "grounding")  # an untrained encoder has no heads: these have no floor
SUITES = {"world": PROBES, "real": PROBES}
GEO_THRESHOLDS = (0.01, 0.05, 0.10)  # fractions of the target image's longer side
GEO_TAGS = {MTV: "mtv", PROBE3D: "p3d"}  # metric prefix of a protocol that is not its split's first
SEM_ALPHA = 0.1  # PCK@0.1 of the target box's longer side (SPair-71k, Probe3D)
DEPTH_HEADS = {"light": "LayerNorm per layer, concat, 1x1 conv, 3x3 conv, 256 evenly spaced bins, logits upsampled, "
                         "Probe3D's linear normalisation (relu + 0.1, divided by the sum)",
               "dpt": "Probe3D's DPT (1x1 projections, 4 fusion stages of residual 3x3 units, x16 upsampling), 256 "
                      "evenly spaced bins, linear normalisation, depth upsampled (align_corners)"}
TRAIN_LABEL_FACTOR = 4  # probes train on label maps at 4x the patch grid; tests score at full label size


class NotRun(Exception):
    """A probe that cannot run on this model or data; the message says why."""


@dataclass
class Features:
    """Frozen features of one split; ``ok`` is False for images that could not be opened (counted, skipped)."""

    pooled: torch.Tensor  # (N, E) L2-normalised image embeddings
    tokens: torch.Tensor  # (N, T, D) final patch tokens
    layers: torch.Tensor  # (N, L, T, D) the intermediate layers in `FeatureStore.layer_ids` order
    grid: tuple[int, int]
    sizes: list[tuple[int, int]]  # original (H, W) per image
    ok: torch.Tensor


class FeatureStore:
    """One frozen pass per split (``cache=True``), or one per request. Tokens and layers are kept in float16:
    halves the memory of large splits, far below the probes' noise."""

    def __init__(self, encoder: Encoder, layer_ids: list[int], batch_size: int, cache: bool, progress: bool):
        self.encoder, self.layer_ids = encoder, layer_ids
        self.batch_size, self.cache, self.progress = batch_size, cache, progress
        self._memo: dict[tuple[int, ImageView], Features] = {}
        self._counted: set[int] = set()  # splits whose unreadable images are counted
        self.passes = 0

    def __call__(self, split: Split, view: ImageView = ImageView()) -> Features:
        key = (id(split), view)
        if self.cache and key in self._memo:
            return self._memo[key]
        feats = self._extract(split, view)
        if self.cache:
            self._memo[key] = feats
        return feats

    @torch.no_grad()
    def _extract(self, split: Split, view: ImageView) -> Features:
        self.passes += 1
        rows, sizes, ok = [], [], []  # rows: (pooled, tokens, layers) of the batches' images that opened
        bar = tqdm(total=len(split), desc=f"features: {split.name}", unit="image", disable=not on_terminal(self.progress),
                   leave=False)
        for start in range(0, len(split), self.batch_size):
            images = []
            for src in split.images[start:start + self.batch_size]:
                try:
                    images.append(open_image(src))
                    ok.append(True)
                except SkipSample:
                    if id(split) not in self._counted:  # one count per image, whatever the passes
                        split.skipped["bad_image"] += 1
                    images.append(None)
                    ok.append(False)
            sizes += [(im.height, im.width) if im else (1, 1) for im in images]
            good = [im for im in images if im is not None]
            if good:
                px = view_pixels(self.encoder, good, view)
                out = self.encoder.encode(px, layers=self.layer_ids if view.layers else [])
                grid = out.grid
                layers = torch.stack(out.layers, 1) if out.layers else out.tokens.new_zeros(len(good), 0)
                rows.append((F.normalize(out.pooled.float(), dim=-1).cpu(), out.tokens.half().cpu(),
                             layers.half().cpu()))
            bar.update(len(images))
        bar.close()
        self._counted.add(id(split))
        if not any(ok):
            raise MTVError(f"{split.name}: no image could be opened ({len(split)} tried)")
        opened = torch.tensor(ok)

        def scatter(parts: list[torch.Tensor]) -> torch.Tensor:
            """One row per image of the split, zeros where it did not open, so indices stay the split's."""
            found = torch.cat(parts)
            full = found.new_zeros((len(ok), *found.shape[1:]))
            full[opened] = found
            return full

        return Features(*(scatter([r[k] for r in rows]) for k in range(3)), grid, sizes, opened)

@dataclass
class Context:
    encoder: Encoder
    heads: dict
    store: FeatureStore
    batch_size: int
    progress: bool
    seg_budget: ProbeBudget
    depth_budget: ProbeBudget
    prior: dict  # the image-free reference of each dense metric (`mtv.eval.priors`), filled by the probes
    sem_convention: Convention = "centre"  # keypoint transfer and PCK test of corr_sem (`mtv.eval.keypoints`)
    profile: ProbeProfile = PROFILES["cpu"]  # the dense probes' head, layers, resolution (`mtv.eval.profiles`)

    @property
    def dense_view(self) -> ImageView:
        return ImageView(side=self.profile.image_side)

    def depth_layers(self) -> list[int]:
        return profile_layers(self.profile, self.encoder.num_layers)


def _resize_nearest(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x[None, None].float(), size=size, mode="nearest")[0, 0]


def _dense_labels(split: Split, feats: Features, read, what: str) -> tuple[list[int], list[torch.Tensor]]:
    """Indices and label maps of images that opened and whose ``what`` map decodes; the rest are counted."""
    idx, maps = [], []
    for i in range(len(split)):
        if not feats.ok[i]:
            continue
        try:
            maps.append(torch.as_tensor(read(i)))
            idx.append(i)
        except SkipSample as e:
            split.skipped[f"{what}/{e}"] += 1
    if not idx:
        raise NotRun(f"no image of {split.name} has a usable {what} label")
    return idx, maps


def _train_size(feats: Features) -> tuple[int, int]:
    return feats.grid[0] * TRAIN_LABEL_FACTOR, feats.grid[1] * TRAIN_LABEL_FACTOR


def probe_zeroshot_retrieval(ctx: Context, test: Split, which: str) -> tuple[dict, dict, dict]:
    """Both go through `score_embeddings`, which computes the two; each call feeds it only its own part (no class
    list for retrieval, one empty text for zero-shot) so neither pays for the other's text embeddings. Every
    caption is its own text (CLIP_benchmark); a string that repeats is embedded once."""
    if which == "retrieval" and not test.captions:
        raise NotRun(f"{test.name} has no captions")
    if which == "zeroshot" and not (test.classes and test.labels):
        raise NotRun(f"{test.name} has no class list")
    feats = ctx.store(test)
    keep = [i for i in range(len(test)) if feats.ok[i] and (which == "zeroshot" or test.captions[i])]
    texts, image_to_texts = ([""], [[0] for _ in keep]) if which == "zeroshot" else ([], [])
    for i in keep if which == "retrieval" else []:
        image_to_texts.append(list(range(len(texts), len(texts) + len(test.captions[i]))))
        texts += test.captions[i]
    unique = list(dict.fromkeys(texts))
    unique_emb = embed_texts(ctx.encoder, unique, ctx.batch_size)
    row = {t: r for r, t in enumerate(unique)}
    labels = torch.tensor([test.labels[i] for i in keep]) if which == "zeroshot" else torch.full((len(keep),), -1)
    emb = Embedded(feats.pooled[keep], unique_emb[[row[t] for t in texts]], image_to_texts, labels)
    classes = test.classes if which == "zeroshot" else []
    metrics, chance, not_run = score_embeddings(ctx.encoder, emb, classes, test.templates or [],
                                                ctx.batch_size)
    if which in not_run:
        raise NotRun(not_run[which])
    mine = lambda d: {k: v for k, v in d.items() if k.startswith(which)}  # noqa: E731
    if which == "retrieval":
        return mine(metrics), mine(chance), {"texts": len(texts), "n_test": len(keep),
                                             "texts_rule": "every caption its own text (CLIP_benchmark)"}
    return mine(metrics), mine(chance), \
        {"templates": test.templates, "template_set": test.template_set, "n_test": len(keep),
         "undefined": {f"zeroshot_{k}": v for k, v in undefined_ks(len(classes)).items()},
         "ties": "credited as torch.topk orders them (CLIP_benchmark)"}


def probe_seg(ctx: Context, train: Split, test: Split) -> tuple[dict, dict, dict]:
    if not (train.seg and test.seg):
        raise NotRun("the data has no semantic maps")
    classes = test.seg_classes or train.seg_classes
    ftr, fte = ctx.store(train, ctx.dense_view), ctx.store(test, ctx.dense_view)
    idx_tr, maps_tr = _dense_labels(train, ftr, train.seg, "seg")
    idx_te, maps_te = _dense_labels(test, fte, test.seg, "seg")
    size = _train_size(ftr)
    labels = torch.stack([_resize_nearest(m, size).long() for m in maps_tr])
    probe = train_linear_seg(ftr.tokens[idx_tr], ftr.grid, labels, len(classes), ctx.seg_budget)
    scores = evaluate_seg(probe, fte.tokens[idx_te], fte.grid, [m.long() for m in maps_te], len(classes))
    ctx.prior.update(seg_prior(maps_tr, maps_te, len(classes)))
    return {"seg_miou": scores["miou"], "seg_pixel_acc": scores["pixel_acc"]}, {}, \
        {**ctx.seg_budget.as_dict(), "features": "final patch tokens", "n_train": len(idx_tr),
         "n_test": len(idx_te), "classes": len(classes), "train_label_size": list(size),
         "ignore_index": IGNORE, "logits": "bilinear upsampling to the label map",
         "miou": "mmsegmentation IoUMetric: areas summed over the test set, NaN-mean of per-class IoU (a class in "
                 "neither truth nor prediction is left out)", "per_class_iou": scores["per_class_iou"]}


def probe_depth(ctx: Context, train: Split, test: Split) -> tuple[dict, dict, dict]:
    if not (train.depth and test.depth):
        raise NotRun("the data has no metric depth")
    protocol = test.depth_protocol
    ftr, fte = ctx.store(train, ctx.dense_view), ctx.store(test, ctx.dense_view)
    idx_tr, maps_tr = _dense_labels(train, ftr, train.depth, "depth")
    idx_te, maps_te = _dense_labels(test, fte, test.depth, "depth")
    size = _train_size(ftr)
    targets = torch.stack([_resize_nearest(m, size) for m in maps_tr])
    pos = [ctx.store.layer_ids.index(k) for k in ctx.depth_layers()]
    head = ctx.profile
    device = ctx.encoder.device if head.depth_head == "dpt" else "cpu"  # the DPT wants a GPU
    probe = train_depth_probe(ftr.layers[idx_tr][:, pos], ftr.grid, targets, protocol, ctx.depth_budget,
                              head.depth_head, head.depth_width, device)
    scores, skipped = evaluate_depth_probe(probe, fte.layers[idx_te][:, pos], fte.grid, maps_te, protocol)
    test.skipped["depth/no_valid_pixel"] += skipped
    ctx.prior.update(depth_prior(maps_tr, maps_te, protocol))
    return {f"depth_{k}": v for k, v in scores.items()}, {}, \
        {**ctx.depth_budget.as_dict(), **protocol.describe(), "n_train": len(idx_tr), "n_test": len(idx_te),
         "layers": ctx.depth_layers(), "profile": ctx.profile.name, "head": DEPTH_HEADS[head.depth_head],
         "width": head.depth_width, "image_side": ctx.profile.describe()["image_side"],
         "loss": "10 x SigLoss(lambda 0.85) + 0.5 x Probe3D's gradient loss (strides 1, 2, 4, 6; pixels two apart; "
                 "divided by the valid pixels)", "train_label_size": list(size),
         "alignment": "raw, and aligned_* after least-squares scale and shift per image"}


def _feature_map(feats: Features, i: int) -> torch.Tensor:
    return feats.tokens[i].float().T.reshape(-1, *feats.grid)


def probe_corr_geo(ctx: Context, test: Split) -> tuple[dict, dict, dict]:
    """Each protocol of ``test.geo_protocols`` in turn: the first owns the ``corr_geo_recall*`` names, the others
    take ``corr_geo_<tag>_recall*`` (`GEO_TAGS`); the config names the protocol behind each prefix."""
    if not test.geo_pairs:
        raise NotRun(f"{test.name} has no view pairs with ground-truth matches")
    bad = [p for p in test.geo_protocols if p not in GEO_PROTOCOLS]
    if bad or not test.geo_protocols:
        raise MTVError(f"{test.name}: geometric protocols {test.geo_protocols!r}; choose from {GEO_PROTOCOLS}")
    fa = ctx.store(test)
    partner = test.partner or test
    fb = fa if partner is test else ctx.store(partner)
    scored = [p for p in test.geo_pairs if fa.ok[p.a] and fb.ok[p.b]]
    test.skipped["corr_geo/bad_image"] += len(test.geo_pairs) - len(scored)
    if not scored:
        raise NotRun("no pair had both images readable")
    metrics, config = {}, {"pairs": len(scored), "protocols": {}}
    for k, protocol in enumerate(test.geo_protocols):
        prefix = "corr_geo" if k == 0 else f"corr_geo_{GEO_TAGS[protocol]}"
        maps = [(_feature_map(fa, p.a), _feature_map(fb, p.b)) for p in scored]
        if protocol == MTV:
            results = [score_geo_pair(p, a, fa.sizes[p.a], b, fb.sizes[p.b]) for p, (a, b) in zip(scored, maps)]
            m, cfg = geo_metrics(results, GEO_THRESHOLDS, test.geo_headline)
            m = {prefix + key.removeprefix("corr_geo"): v for key, v in m.items()}
            cfg = {"protocol": f"{MTV} (sampled true matches, nearest neighbour)", "thresholds":
                   "fraction of the target image's longer side", "headline": test.geo_headline,
                   "matches": int(sum(len(r.px) for r in results)),
                   "features": "final patch tokens, bilinear upsampling, cosine nearest neighbour", **cfg}
            if k == 0:
                ctx.prior.update(geo_prior(scored, [fa.sizes[p.a] for p in scored],
                                           [fb.sizes[p.b] for p in scored], GEO_THRESHOLDS, test.geo_headline))
        else:
            results = [r for p, (a, b) in zip(scored, maps) if (r := score_probe3d_pair(p, a, b, fb.sizes[p.b]))]
            test.skipped[f"corr_geo/{protocol}_too_few_points"] += len(scored) - len(results)
            if not results:
                raise NotRun(f"no pair had two valid depth points per view for the {protocol} protocol")
            m, cfg = probe3d_metrics(results, prefix)
            cfg = {**cfg, "matches": int(sum(len(r.err_3d) for r in results)), "pairs": len(results)}
        metrics |= m
        config["protocols"][f"{prefix}_recall*"] = cfg
    return metrics, {}, config


def probe_corr_sem(ctx: Context, test: Split) -> tuple[dict, dict, dict]:
    if not test.sem_pairs:
        raise NotRun(f"{test.name} has no keypoint pairs")
    feats = ctx.store(test, VIEWS[ctx.sem_convention])
    scored, per_pair = [], []
    for p in test.sem_pairs:
        if not (feats.ok[p.a] and feats.ok[p.b]):
            test.skipped["corr_sem/bad_image"] += 1
            continue
        scored.append(p)
        pred = transfer(_feature_map(feats, p.a), feats.sizes[p.a], p.pts_a, _feature_map(feats, p.b),
                        feats.sizes[p.b], ctx.sem_convention)
        truth = scored_points(p.pts_b, feats.sizes[p.b], ctx.sem_convention)
        per_pair.append(hits(pred, truth, p.bbox, SEM_ALPHA, ctx.sem_convention))
    if not scored:
        raise NotRun("no pair had both images readable")
    metrics, per_class = pck_metrics(per_pair, [p.category for p in scored], [p.viewpoint for p in scored])
    ctx.prior.update(sem_prior(scored, [feats.sizes[p.a] for p in scored], [feats.sizes[p.b] for p in scored],
                               SEM_ALPHA, ctx.sem_convention))
    bins = sorted({p.viewpoint for p in scored if p.viewpoint is not None})
    return metrics, {}, \
        {"pairs": len(scored), "alpha": SEM_ALPHA, "bbox": "max(w, h) of the target box",
         "convention": ctx.sem_convention, "matching": DESCRIPTIONS[ctx.sem_convention],
         "image_side": VIEWS[ctx.sem_convention].side or "the processor's",
         "averaging": "per keypoint within a class, then over classes"
                      + ("; corr_sem_pck_vp<k>: the same within viewpoint_variation bin k" if bins else ""),
         "per_class": per_class}


def probe_depth_head(ctx: Context, test: Split) -> tuple[dict, dict, dict]:
    head = ctx.heads.get("depth")
    if head is None:
        raise NotRun("the model has no MTV depth head")
    if not test.depth:
        raise NotRun("the data has no metric depth")
    feats = ctx.store(test)
    idx, maps = _dense_labels(test, feats, test.depth, "depth")
    pos = [ctx.store.layer_ids.index(k) for k in head.layers]
    scores, skipped = eval_depth_head(head, [feats.layers[i][pos] for i in idx], feats.grid, maps,
                                      test.depth_protocol)
    test.skipped["depth_head/no_valid_pixel"] += skipped
    return {f"depth_head_{k}": v for k, v in scores.items()}, {}, \
        {**test.depth_protocol.describe(), "n_test": len(idx),
         "alignment": "least-squares scale and shift of inverse depth per image, then inverted (MiDaS)"}


def probe_grounding(ctx: Context, test: Split) -> tuple[dict, dict, dict]:
    head = ctx.heads.get("grounding")
    if head is None:
        raise NotRun("the model has no MTV grounding head")
    if not test.phrases:
        raise NotRun(f"{test.name} has no phrase boxes")
    feats = ctx.store(test)
    idx = [i for i in range(len(test)) if feats.ok[i]]
    unique = sorted({p for i in idx for p, _ in test.phrases[i]})
    if not unique:
        raise NotRun(f"{test.name} has no boxed phrase")
    emb = dict(zip(unique, embed_texts(ctx.encoder, unique, ctx.batch_size)))
    acc, n = eval_grounding(head, [feats.tokens[i] for i in idx], feats.grid, [test.phrases[i] for i in idx],
                            [feats.sizes[i] for i in idx], emb)
    return {"grounding_acc50": acc}, {}, {"queries": n, "iou": 0.5,
                                          "phrases": "boxed phrases of held-out scenes, ambiguous ones left out"}


def _run_probe(ctx: Context, name: str, train: Split | None, test: Split) -> tuple[dict, dict, dict]:
    if name in ("zeroshot", "retrieval"):
        return probe_zeroshot_retrieval(ctx, test, name)
    if name in ("seg", "depth"):
        if train is None:
            raise NotRun("no training split (pass --train)")
        return (probe_seg if name == "seg" else probe_depth)(ctx, train, test)
    return {"corr_geo": probe_corr_geo, "corr_sem": probe_corr_sem, "depth_head": probe_depth_head,
            "grounding": probe_grounding}[name](ctx, test)


class WorldData:
    """Both world splits, loaded once; every probe uses the same pair."""

    def __init__(self, test: str, train: str | None, max_samples: int | None, seed: int):
        self.test = load_world(test, "test", max_samples, seed, pairs=True)
        self.train = load_world(train, "train", max_samples) if train else None
        self.missing: dict[str, str] = {}  # a world split is never partly absent

    def splits(self, probe: str) -> list[tuple[str, Split | None, Split]]:
        return [("", self.train, self.test)]

    def all_splits(self) -> list[Split]:
        return [s for s in (self.train, self.test, self.test.partner) if s is not None]


def parse_probes(suite: str) -> tuple[str | None, list[str]]:
    """``world`` / ``real`` presets, or a comma-separated probe list (preset None)."""
    if suite in SUITES:
        return suite, list(SUITES[suite])
    names = [p.strip() for p in suite.split(",") if p.strip()]
    bad = [p for p in names if p not in PROBES]
    if bad or not names:
        raise MTVError(f"--suite {suite!r}: unknown probe {bad[0] if bad else ''!r}; choose world, real or a "
                       f"comma-separated list of {', '.join(PROBES)}")
    return None, names


def is_world(data: str) -> bool:
    return data.endswith(".tar") or "{" in data or any(n.endswith(".tar") for n in os.listdir(data))


def _floor(model_dir: str, probes: list[str], settings: dict, progress: bool) -> tuple[dict, dict | None]:
    """Metrics of the untrained twin of ``model_dir`` (`mtv.eval.floor`) under the same ``settings``, computed
    once per model, data and settings and then read from the cache. ``probes`` are those that ran."""
    wanted = [p for p in probes if p not in NEEDS_HEADS]
    if not wanted:
        return {}, None
    untrained, recipe = untrained_model(model_dir)
    final = floor_report_dir(untrained, {**settings, "probes": wanted})
    cached = (final / "report.json").exists()
    if not cached:
        tmp = final.with_name(f"{final.name}.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        run_suite(untrained, out=tmp, suite=",".join(wanted), floor=False, progress=progress, **settings)
        publish(tmp, final)
    floor = json.loads((final / "report.json").read_text())
    return floor["metrics"], {**recipe, "model": str(untrained), "report": str(final / "report.json"),
                              "cached": cached, "diagnostics": floor.get("diagnostics", {})}


def make_context(encoder: Encoder, heads: dict, chosen: ProbeProfile, batch_size: int = 64, cache: bool = True,
                 progress: bool = False, seed: int = 0, epochs: int | None = None,
                 sem_convention: Convention = "centre") -> Context:
    """What the probes read for ``encoder``: one feature store with every layer the profile and heads need."""
    num_layers = encoder.num_layers
    layer_ids = sorted(set(depth_layers(num_layers)) | set(profile_layers(chosen, num_layers))
                       | set(getattr(heads.get("depth"), "layers", [])))
    seg_budget, depth_budget = (replace(b, seed=seed, **({"epochs": epochs} if epochs else {}))
                                for b in (chosen.seg_budget, chosen.depth_budget))
    return Context(encoder, heads, FeatureStore(encoder, layer_ids, batch_size, cache, progress),
                   batch_size, progress, seg_budget, depth_budget, {}, sem_convention, chosen)


def run_probes(ctx: Context, source, probes: list[str], strict: bool = True
               ) -> tuple[dict, dict, dict, dict, dict]:
    """Metrics, chance levels, probes not run (with why), probe configs and seconds of each of ``probes`` on
    ``source``'s splits (`WorldData` or `RealData`). ``strict``: an input error stops the run instead of being
    recorded as not run (a list the user named, not a preset)."""
    metrics, chance, not_run, configs, timings = {}, {}, {}, {}, {}
    bar = tqdm(probes, desc="eval", unit="probe", disable=not on_terminal(ctx.progress))
    for name in bar:
        bar.set_description(f"eval: {name}")
        start = time.perf_counter()
        try:
            for suffix, tr, te in source.splits(name):
                m, c, cfg = _run_probe(ctx, name, tr, te)
                if suffix:
                    m = {k.replace(name, name + suffix, 1): v for k, v in m.items()}
                metrics.update(m)
                chance.update(c)
                configs[name + suffix] = cfg
        except NotRun as e:
            not_run[name] = str(e)
        except MTVError as e:
            if strict:
                raise
            not_run[name] = str(e)
        timings[name] = round(time.perf_counter() - start, 3)
    bar.close()
    return metrics, chance, not_run, configs, timings


def run_suite(model_dir: str | os.PathLike, data: str | os.PathLike, out: str | os.PathLike, suite: str = "world",
              train: str | os.PathLike | None = None, batch_size: int = 64, max_samples: int | None = None,
              cache: bool = True, seed: int = 0, epochs: int | None = None, progress: bool = True,
              floor: bool | None = None, sem_convention: Convention = "centre", protocol: str = "cpu") -> dict:
    """Runs the probes of ``suite`` and writes report.json and report.md in ``out``; returns the report.

    ``data``: world held-out shards, or the real benchmarks' root; ``train``: world shards the seg and depth
    probes train on. ``epochs`` overrides both probes' budgets (recorded). ``floor`` (default: on world data)
    adds ``metrics_floor``, the same probes on an untrained encoder of the same architecture and init seed.
    ``sem_convention`` picks corr_sem's keypoint convention (`mtv.eval.keypoints`), ``protocol`` the dense probes'
    profile (`mtv.eval.profiles`: ``cpu`` or ``probe3d``). Cheap checks come before features."""
    model_dir, data, out = str(model_dir), str(data), str(out)
    if batch_size < 1 or (max_samples is not None and max_samples < 1) or (epochs is not None and epochs < 1):
        raise MTVError(f"eval: batch_size ({batch_size}), max_samples ({max_samples}) and epochs ({epochs}) "
                       "must be at least 1")
    if sem_convention not in CONVENTIONS:
        raise MTVError(f"eval: --sem-convention {sem_convention!r}: choose one of {', '.join(CONVENTIONS)}")
    chosen = profile(protocol)
    preset, probes = parse_probes(suite)
    writable_dir(out, "report", "--out directory")
    if not os.path.exists(data):
        raise MTVError(f"{data}: no such data directory")
    world = preset == "world" or (preset is None and is_world(data))
    floor = world if floor is None else floor
    source = WorldData(data, str(train) if train else None, max_samples, seed) if world \
        else RealData(data, max_samples)
    encoder = load_encoder(model_dir)
    encoder.model.to("cuda" if torch.cuda.is_available() else "cpu")
    heads = {k: h.to(encoder.device) for k, h in load_heads(model_dir, encoder.model).items()} \
        if encoder.carries_heads else {}
    ctx = make_context(encoder, heads, chosen, batch_size, cache, progress, seed, epochs, sem_convention)
    skip = not_applicable(encoder, probes)
    metrics, chance, not_run, configs, timings = run_probes(ctx, source, [p for p in probes if p not in skip],
                                                            strict=preset is None)
    not_run.update(source.missing)
    if not metrics and not skip:
        raise MTVError(f"{data}: none of the probes could run ("
                       + "; ".join(f"{k}: {v}" for k, v in list(not_run.items())[:3])
                       + "); for --suite real the folder must hold benchmarks in the layouts of docs/EVALUATION.md")

    diagnostics = {}
    if world and cache and ctx.store.passes:
        feats = ctx.store(source.test)
        diagnostics = {"pooled_effective_rank": effective_rank(feats.pooled[feats.ok]),
                       "tokens_effective_rank": effective_rank(feats.tokens[feats.ok].flatten(0, 1)),
                       "dims": feats.tokens.shape[-1]}
    metrics_floor, floor_info = {}, None
    if floor:
        settings = {"data": data, "train": str(train) if train else None, "batch_size": batch_size,
                    "max_samples": max_samples, "cache": cache, "seed": seed, "epochs": epochs,
                    "sem_convention": sem_convention, "protocol": protocol}
        metrics_floor, floor_info = _floor(model_dir, [p for p in probes if p not in skip], settings, progress)
        metrics_floor = {k: v for k, v in metrics_floor.items() if k in metrics}

    splits = source.all_splits()
    skipped = Counter()
    for s in splits:
        skipped.update({f"{s.name}/{k}": v for k, v in s.skipped.items() if v})
    report = {
        "model": model_dir, "suite": suite, "data": data, "train": str(train) if train else None,
        "probes": probes, "metrics": metrics, "metrics_floor": metrics_floor,
        "metrics_prior": {k: v for k, v in ctx.prior.items() if k in metrics}, "chance": chance, "not_run": not_run,
        "not_applicable": skip, "num_samples": {s.name: len(s) for s in splits},
        "skipped": {"total": sum(skipped.values()), **dict(sorted(skipped.items()))},
        "config": {"encoder": encoder.describe(), "protocol": chosen.describe(), "batch_size": batch_size,
                   "max_samples": max_samples, "cache": cache, "seed": seed, "resolution": list(encoder.image.size),
                   "patch_size": encoder.patch_size, "feature_layers": ctx.store.layer_ids,
                   "heads": sorted(heads), "feature_passes": ctx.store.passes, "floor": floor_info, **configs},
        "diagnostics": diagnostics,
        "timings_s": timings,
        "versions": versions(),
    }
    write_report(report, out)
    return report
