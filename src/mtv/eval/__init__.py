"""`mtv eval`: zero-shot classification and image-text retrieval of any encoder with a text tower (SigLIP, MTV,
CLIP: `mtv.eval.encoders`).

Every family goes through the same code (the model's own preprocessing and tokenizer; for SigLIP the Quick
Start's inputs), so their reports compare side by side; an image-only encoder reports both as not applicable. Metric functions live in the submodules as pure
functions on tensors, for the probe suites to reuse.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from tqdm import tqdm

from mtv.data.schema import decode_caption, decode_image, decode_json
from mtv.data.shards import DATASET_META, ReadStats, dataset_meta, list_shards, read_samples
from mtv.errors import MTVError, SkipSample, writable_dir
from mtv.eval.encoders import Encoder, load_encoder
from mtv.eval.features import embed_images, embed_texts
from mtv.eval.report import versions, write_report
from mtv.eval.retrieval import retrieval_chance, retrieval_recall
from mtv.eval.zeroshot import (class_embeddings, class_prompts, template_set, undefined_ks, zeroshot_accuracy,
                               zeroshot_chance)
from mtv.progress import on_terminal


def __getattr__(name: str):
    if name == "run_suite":  # the probe suite imports more (probes, loaders); load it only when asked for
        from mtv.eval.suite import run_suite

        return run_suite
    raise AttributeError(name)

__all__ = ["evaluate", "run_suite"]

NEEDS_TEXT = ("zeroshot", "retrieval", "grounding")  # probes an image-only encoder reports as not applicable


@dataclass
class Embedded:
    """One embedded held-out set: image i's captions are rows ``image_to_texts[i]`` of ``text_emb``;
    label -1 = no class."""

    image_emb: torch.Tensor
    text_emb: torch.Tensor
    image_to_texts: list[list[int]]
    labels: torch.Tensor


def _zeroshot_setup(meta: dict, data: str) -> tuple[list[str], list[str], str]:
    """Class names, prompt templates and the templates' set name; no classes means zero-shot is not run."""
    where = f"{DATASET_META} beside {data}"
    classes = meta.get("classes") or []
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise MTVError(f"{where}: 'classes' must be a list of class names (index = class_id)")
    templates, source = template_set(meta)
    bad = [t for t in templates if not isinstance(t, str) or "{}" not in t]
    if bad:
        raise MTVError(f"{where}: template {bad[0]!r} has no '{{}}' for the class name; add it or drop the template")
    return classes, templates, source


def _label(info: dict, class_index: dict[str, int]) -> int:
    name, cid = info.get("class"), info.get("class_id")
    if isinstance(name, str) and name in class_index:
        return class_index[name]
    if isinstance(cid, int) and 0 <= cid < len(class_index):
        return cid
    return -1


def _embed_samples(encoder: Encoder, paths: list[str], classes: list[str], batch_size: int,
                   max_samples: int | None, stats: ReadStats, progress: bool) -> Embedded:
    """Decodes and embeds samples batch by batch, so memory holds one batch of images, not the data set.

    Every sample's caption is its own text, as in CLIP_benchmark, even where two captions are the same string
    (such a string is embedded once and its row repeated).
    """
    class_index = {name: i for i, name in enumerate(classes)}
    text_index: dict[str, int] = {}
    images, new_texts, caption_rows, labels, image_chunks, text_chunks = [], [], [], [], [], []
    bar = tqdm(total=max_samples, desc="eval: embedding", unit="sample", disable=not on_terminal(progress))

    def flush() -> None:
        image_chunks.append(embed_images(encoder, images, batch_size))
        if new_texts:
            text_chunks.append(embed_texts(encoder, new_texts, batch_size))
        bar.update(len(images))
        images.clear()
        new_texts.clear()

    for sample in read_samples(paths, stats):
        try:
            image, caption, info = decode_image(sample), decode_caption(sample), decode_json(sample)
        except SkipSample as e:
            stats.skip(str(e))
            continue
        if caption not in text_index:
            text_index[caption] = len(text_index)
            new_texts.append(caption)
        images.append(image)
        caption_rows.append(text_index[caption])
        labels.append(_label(info, class_index))
        if len(images) == batch_size:
            flush()
        if len(labels) == max_samples:
            break
    if images:
        flush()
    bar.close()
    if not labels:
        raise MTVError(f"{paths[0]}: no usable samples in the data ({_skipped(stats)}); check the shards decode")
    return Embedded(torch.cat(image_chunks), torch.cat(text_chunks)[caption_rows],
                    [[i] for i in range(len(labels))], torch.tensor(labels))


def _skipped(stats: ReadStats) -> dict[str, int]:
    return {"total": stats["skipped"],
            **{k.split("/", 1)[1]: v for k, v in sorted(stats.items()) if k.startswith("skipped/")}}


def score_embeddings(encoder: Encoder, emb: Embedded, classes: list[str], templates: list[str],
                     batch_size: int) -> tuple[dict, dict, dict]:
    """Zero-shot and retrieval metrics, their chance levels, and why zero-shot did not run (if it did not)."""
    metrics, chance, not_run = {}, {}, {}
    labelled = emb.labels >= 0
    if not classes:
        not_run["zeroshot"] = f"no class list ('classes' in {DATASET_META}) for this data set"
    elif not labelled.any():
        not_run["zeroshot"] = "no sample has a 'class' or 'class_id' in its json that names a listed class"
    else:
        prompt_emb = embed_texts(encoder, class_prompts(classes, templates), batch_size)
        class_emb = class_embeddings(prompt_emb, len(classes))
        zs = zeroshot_accuracy(emb.image_emb[labelled], class_emb, emb.labels[labelled])
        metrics.update({f"zeroshot_{k}": v for k, v in zs.items()})
        chance.update({f"zeroshot_{k}": v for k, v in zeroshot_chance(len(classes)).items()})
    sim = emb.image_emb @ emb.text_emb.T  # cosine, as CLIP_benchmark ranks (the Quick Start's t·cos + b ranks alike)
    metrics.update({f"retrieval_{k}": v for k, v in retrieval_recall(sim, emb.image_to_texts).items()})
    chance.update({f"retrieval_{k}": v for k, v in retrieval_chance(emb.image_to_texts, sim.shape[1]).items()})
    return metrics, chance, not_run


def evaluate(model_dir: str | os.PathLike, data: str | os.PathLike, out: str | os.PathLike, batch_size: int = 64,
             max_samples: int | None = None, progress: bool = True) -> dict:
    """Zero-shot top-1/top-5/mean per-class recall and retrieval R@1/5/10 both ways; writes report.json and
    report.md in ``out`` and returns the report. Cheap checks (output, shards, model) come before embedding."""
    model_dir, data, out = str(model_dir), str(data), str(out)
    if batch_size < 1 or (max_samples is not None and max_samples < 1):
        raise MTVError(f"eval: batch_size ({batch_size}) and max_samples ({max_samples}) must be at least 1")
    writable_dir(out, "report", "--out directory")  # fail in seconds, not after the embedding pass
    paths = list_shards(data)
    classes, templates, templates_from = _zeroshot_setup(dataset_meta(data), data)
    encoder = load_encoder(model_dir)
    if not encoder.has_text:
        return _text_free_report(encoder, model_dir, data, out, batch_size, max_samples)
    encoder.model.to("cuda" if torch.cuda.is_available() else "cpu")

    stats = ReadStats()
    emb = _embed_samples(encoder, paths, classes, batch_size, max_samples, stats, progress)
    metrics, chance, not_run = score_embeddings(encoder, emb, classes, templates, batch_size)
    ran = "zeroshot" not in not_run

    report = {
        "model": model_dir, "data": data, "num_samples": len(emb.labels), "num_texts": len(emb.text_emb),
        "num_classes": len(classes),
        "num_zeroshot_samples": int((emb.labels >= 0).sum()) if ran else 0,
        "metrics": metrics, "chance": chance, "not_run": not_run, "not_applicable": {}, "skipped": _skipped(stats),
        "config": {"encoder": encoder.describe(), "batch_size": batch_size, "templates": templates if ran else None,
                   "template_set": templates_from if ran else None,
                   "undefined": {f"zeroshot_{k}": v for k, v in undefined_ks(len(classes)).items()} if ran else {},
                   "max_samples": max_samples},
        "versions": versions(),
    }
    write_report(report, out)
    return report


def not_applicable(encoder: Encoder, probes: list[str]) -> dict[str, str]:
    """The ``probes`` that need a text tower, when ``encoder`` has none, with why."""
    return {p: f"a {encoder.family} encoder has no text tower" for p in probes if not encoder.has_text
            and p in NEEDS_TEXT}


def _text_free_report(encoder: Encoder, model_dir: str, data: str, out: str, batch_size: int,
                      max_samples: int | None) -> dict:
    """Zero-shot and retrieval of an image-only encoder: not applicable, said in the report, not an error."""
    report = {"model": model_dir, "data": data, "num_samples": 0, "num_texts": 0, "num_classes": 0,
              "num_zeroshot_samples": 0, "metrics": {}, "chance": {}, "not_run": {},
              "not_applicable": not_applicable(encoder, ["zeroshot", "retrieval"]), "skipped": {"total": 0},
              "config": {"encoder": encoder.describe(), "batch_size": batch_size, "max_samples": max_samples},
              "versions": versions()}
    write_report(report, out)
    return report
