"""The labelling loop: shards in, labelled shards out — batched, parallel decoding, resumable, accounted.

Pipeline. DataLoader workers each own whole input shards (worker w of K reads shards w, w+K, ...): they decode
images, drop bad samples with a reason, run each expert's ``prep`` (resize, pad, phrase extraction; the oracle
does all its work here) and hand over *batches of one shard*. The main process runs the experts on the device
and passes results to a writer thread that encodes PNGs and appends to the output shard, so neither JPEG
decoding nor PNG encoding keeps the device waiting. A batch holds consecutive samples of one shard, so its
composition — and the labels, bit for bit on a given machine — depend only on the shard and the batch size,
not on the number of workers, the interleaving, or whether the run was resumed.

Output. Each input shard gives an output shard of the same name, written as ``NAME.tmp`` and renamed when
complete, plus ``STEM.report.json`` (written just before the rename): counts, skipped samples with key and
reason, box and score histograms, provenance. A shard counts as done when both exist; a rerun skips done
shards (after checking they were made with the same settings) and redoes everything else, so a killed run
loses at most the shards in flight. Skipped samples are left out of the output shard and listed in its report.

Sample format (shared with the trainer). Original members are copied unchanged; ``json`` keeps its keys and
gains ``depth`` = {type: inverse_relative, scale, shift, expert} for ``depth.png`` (16-bit, 0 = invalid; read
it with ``decode_depth(sample, meta["depth"])``), ``pseudo_boxes`` = [{phrase, box: [x0, y0, x1, y1] pixels,
score}] and ``labels`` = provenance. A depth the input already had that is not a pseudo-label (MTV World's
metric truth) is kept as ``depth_metric`` / ``metric.depth.png``: ``decode_depth(sample, meta["depth_metric"],
"metric.depth.png")``.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import time
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

import mtv
from mtv.atomic import disk_error, is_disk_error, write_text
from mtv.data.schema import (DEPTH, META, METRIC_DEPTH, decode_caption, decode_image, decode_json, encode_inverse_depth,
                             encode_json)
from mtv.data.shards import DATASET_META, ReadStats, ShardWriter, dataset_meta, iter_shard
from mtv.data.workers import init_worker
from mtv.errors import MTVError, SkipSample, writable_dir
from mtv.words import count

REPORT = ".report.json"
SCORE_BINS = 10  # score histogram over [0, 1]
WRITES_IN_FLIGHT = 8  # batches queued for the writer thread before the device waits for it


def report_path(shard: Path) -> Path:
    return shard.with_name(shard.name.removesuffix(".tar") + REPORT)


def _as_is(batch):
    """DataLoader's default would turn the oracle's numpy arrays into tensors; batches are already built."""
    return batch


class ShardBatches(IterableDataset):
    """Batches of decoded, expert-prepared samples of one shard at a time; each shard's last batch has
    ``last=True`` and the shard's read counts."""

    def __init__(self, jobs: list[tuple[int, str]], experts: list, batch_size: int):
        self.jobs, self.batch_size = jobs, batch_size
        self.preps = {e.kind: e.prep for e in experts}
        self.min_side = max(e.min_side for e in experts)

    def __iter__(self):
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        for index, path in self.jobs[wid::nw]:
            yield from self._shard(index, path)

    def _new(self, index: int) -> dict:
        return {"shard": index, "samples": [], "meta": [], "payloads": {k: [] for k in self.preps},
                "skipped": [], "last": False}

    def _shard(self, index: int, path: str):
        stats, batch = ReadStats(), self._new(index)
        for raw in iter_shard(path, stats):
            try:
                meta, payloads = self._prepare(raw)
            except SkipSample as e:
                batch["skipped"].append({"key": raw["__key__"], "reason": str(e)})
                continue
            batch["samples"].append(raw)
            batch["meta"].append(meta)
            for kind, payload in payloads.items():
                batch["payloads"][kind].append(payload)
            if len(batch["samples"]) == self.batch_size:
                yield batch
                batch = self._new(index)
        batch.update(last=True, read=dict(stats))
        yield batch

    def _prepare(self, raw: dict) -> tuple[dict, dict]:
        """Expert payloads of one sample; an empty caption gives boxes None (no phrases to look for), while
        depth, like SSL, needs no caption."""
        try:
            image = decode_image(raw)
        except Image.DecompressionBombError:
            raise SkipSample("image_too_large") from None
        caption, meta = _caption_or_empty(raw), decode_json(raw)
        if not isinstance(meta, dict):
            raise SkipSample("bad_json")
        if min(image.size) < self.min_side:
            raise SkipSample("too_small")
        return meta, {kind: None if kind == "boxes" and not caption else prep(raw, image, caption, meta)
                      for kind, prep in self.preps.items()}


def _caption_or_empty(raw: dict) -> str:
    try:
        return decode_caption(raw)
    except SkipSample as e:
        if str(e) == "empty_caption":
            return ""
        raise


def label_batch(expert, payloads: list) -> list:
    """``expert.label`` over the payloads that are not None (captionless images' boxes), [] for the rest."""
    todo = [i for i, p in enumerate(payloads) if p is not None]
    done = dict(zip(todo, expert.label([payloads[i] for i in todo]) if todo else []))
    return [done.get(i, []) for i in range(len(payloads))]


class OutShard:
    """One output shard being written (by the writer thread) and its report."""

    def __init__(self, source: str, target: Path, provenance: dict):
        self.target, self.provenance = target, provenance
        self.writer = ShardWriter(target)
        self.start = time.perf_counter()
        self.report = {"input": source, "output": target.name, "labelled": 0, "empty_caption": 0, "skipped": [],
                       "boxes": 0,
                       "boxes_per_image": Counter(), "score_histogram": [0] * SCORE_BINS, "provenance": provenance}

    def add(self, batch: dict, results: dict[str, list]) -> None:
        self.report["skipped"] += batch["skipped"]
        for j, raw in enumerate(batch["samples"]):
            out = {k: v for k, v in raw.items() if not k.startswith("__")}
            out["__key__"] = raw["__key__"]
            meta = dict(batch["meta"][j])
            if not _caption_or_empty(raw):
                self.report["empty_caption"] += 1
            if "depth" in results:
                self._put_depth(out, meta, results["depth"][j])
            if "boxes" in results:
                meta["pseudo_boxes"] = results["boxes"][j]
                self._count_boxes(meta["pseudo_boxes"])
            meta["labels"] = self.provenance
            out[META] = encode_json(meta)
            self.writer.write(out)
        self.report["labelled"] += len(batch["samples"])

    def _put_depth(self, out: dict, meta: dict, inverse_depth) -> None:
        if (meta.get("depth") or {}).get("type") != "inverse_relative":  # truth, not an earlier pseudo-label
            if "depth" in meta:
                meta["depth_metric"] = meta.pop("depth")
            if DEPTH in out:
                out[METRIC_DEPTH] = out.pop(DEPTH)
        out[DEPTH], entry = encode_inverse_depth(inverse_depth)
        meta["depth"] = {**entry, "expert": self.provenance["settings"]["depth"].get("expert")}

    def _count_boxes(self, boxes: list[dict]) -> None:
        self.report["boxes"] += len(boxes)
        self.report["boxes_per_image"][len(boxes)] += 1
        for b in boxes:
            self.report["score_histogram"][min(int(b["score"] * SCORE_BINS), SCORE_BINS - 1)] += 1

    def close(self, read: dict) -> None:
        """Report first, then the shard's rename: a shard is done only when both exist."""
        skipped = self.report["skipped"]
        self.report.update(
            samples_read=read.get("samples", 0), input_corrupt=bool(read.get("bad_shards")),
            skipped_by_reason=dict(Counter(s["reason"] for s in skipped)),
            boxes_per_image={str(k): v for k, v in sorted(self.report["boxes_per_image"].items())},
            seconds=round(time.perf_counter() - self.start, 3))
        try:
            _write_json_atomic(report_path(self.target), self.report)
        except BaseException:
            self.writer.abort()
            raise
        if self.report["labelled"]:
            self.writer.close()
        else:  # no shard at all, so that a rerun tries it again instead of counting an empty one as done
            self.writer.abort()
            self.target.unlink(missing_ok=True)

    def abort(self) -> None:
        """Drop the partial file (what a kill would leave, and a rerun would redo anyway)."""
        self.writer.abort()


def _write_json_atomic(path: Path, obj: dict) -> None:
    write_text(path, json.dumps(obj, indent=1, sort_keys=True))


def _git_commit() -> str | None:
    try:
        done = subprocess.run(["git", "-C", os.path.dirname(mtv.__file__), "rev-parse", "HEAD"],
                              capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def provenance(experts: list, device: torch.device) -> dict:
    """``settings`` decide the labels (a resumed run must match them); ``code`` and ``runtime`` are for the record."""
    import transformers

    return {"settings": {e.kind: e.provenance() for e in experts},
            "code": {"mtv": mtv.__version__, "git": _git_commit(), "torch": torch.__version__,
                     "transformers": transformers.__version__},
            "runtime": {"device": device.type,
                        "precision": {e.kind: str(getattr(e, "dtype", None) or "fp32") for e in experts}}}


def _done(target: Path, settings: dict) -> bool:
    report = report_path(target)
    if not (target.exists() and report.exists()):
        return False
    try:
        previous = json.loads(report.read_text())["provenance"]["settings"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return False  # a damaged report: relabel the shard
    if previous != settings:
        raise MTVError(f"{target}: labelled earlier with other settings ({_diff(previous, settings)}); "
                       "write to a new --out, or pass --overwrite to relabel")
    return True


def _diff(old: dict, new: dict) -> str:
    keys = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    return ", ".join(f"{k}: {old.get(k)} -> {new.get(k)}" for k in keys)


class Writer:
    """A single background thread that applies writes in submission order; errors surface in the main thread."""

    def __init__(self):
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="mtv-label-writer")
        self.pending: deque[Future] = deque()

    def submit(self, fn, *args) -> None:
        self.pending.append(self.pool.submit(fn, *args))
        while self.pending and (self.pending[0].done() or len(self.pending) > WRITES_IN_FLIGHT):
            self.pending.popleft().result()

    def finish(self) -> None:
        while self.pending:
            self.pending.popleft().result()
        self.pool.shutdown()


def label_shard_list(shards: list[str], out: str | os.PathLike, experts: list, device: torch.device, *,
                     batch_size: int = 16, workers: int = 2, overwrite: bool = False, max_skip_rate: float = 0.5,
                     progress: bool = False) -> dict:
    """Labels ``shards`` into ``out`` with ``experts`` (each with ``kind``, ``prep``, ``label``, ``provenance``,
    ``min_side``) and returns the summary over all of them (this run's work and earlier runs')."""
    from tqdm import tqdm

    if batch_size < 1 or workers < 0:
        raise MTVError(f"--batch-size must be >= 1 and --workers >= 0 (got {batch_size}, {workers})")
    out = writable_dir(out, "labelled shards", "--out")
    record = provenance(experts, device)
    targets = [out / Path(s).name for s in shards]
    if any(Path(s).resolve() == t.resolve() for s, t in zip(shards, targets)):
        raise MTVError(f"{out}: is the input folder; write labelled shards to another --out")
    jobs = [(i, s) for i, (s, t) in enumerate(zip(shards, targets))
            if overwrite or not _done(t, record["settings"])]
    if shards:
        _write_json_atomic(out / DATASET_META, {**dataset_meta(shards[0]), "labels": record})
    workers = min(workers, len(jobs))
    loader = DataLoader(ShardBatches(jobs, experts, batch_size), batch_size=None, collate_fn=_as_is,
                        num_workers=workers, prefetch_factor=2 if workers else None, pin_memory=device.type == "cuda",
                        worker_init_fn=init_worker)
    writer, open_shards, labelled, seen, skipped = Writer(), {}, 0, 0, Counter()
    start = time.perf_counter()
    bar = tqdm(total=len(jobs), unit="shard", desc="mtv label", disable=not progress, dynamic_ncols=True)
    try:
        for batch in loader:
            i = batch["shard"]
            if i not in open_shards:
                open_shards[i] = OutShard(shards[i], targets[i], record)
            results = {e.kind: label_batch(e, batch["payloads"][e.kind]) for e in experts}
            writer.submit(open_shards[i].add, batch, results)
            labelled += len(batch["samples"])
            seen += len(batch["samples"]) + len(batch["skipped"])
            skipped.update(s["reason"] for s in batch["skipped"])
            bar.set_postfix(images=labelled, refresh=False)
            if batch["last"]:
                writer.submit(open_shards.pop(i).close, batch["read"])
                bar.update()
                _check_skip_rate(seen, skipped, max_skip_rate)
        writer.finish()
    except BaseException as e:
        try:
            writer.finish()  # let queued writes land, so shards closed before the error are complete
        except OSError:
            pass  # the disk is full: the error below says so
        finally:
            for shard in open_shards.values():
                shard.abort()
        if is_disk_error(e):
            raise disk_error(e.filename or out, e) from None
        raise
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    return {**summarise(targets), "shards_labelled_now": len(jobs), "images_labelled_now": labelled,
            "seconds": round(seconds, 2), "images_per_s": labelled / seconds if seconds else 0.0}


def _check_skip_rate(seen: int, skipped: Counter, bound: float) -> None:
    """Checked at each shard's end, so every shard finished so far is kept for the rerun."""
    total = sum(skipped.values())
    if seen and total / seen > bound:
        reasons = ", ".join(f"{r} {n}" for r, n in skipped.most_common(3))
        hint = ("the oracle experts need MTV World shards (mtv world), not photos; "
                if {"no_metric_depth", "no_truth_boxes"} & skipped.keys() else "")
        raise MTVError(f"{total} of {seen} samples skipped ({reasons}), more than --max-skip-rate {bound}; "
                       f"{hint}check the input shards (or raise the bound); finished shards are kept")


def summarise(targets: list[Path]) -> dict:
    """Totals over the reports of ``targets`` that exist, whichever run wrote them. A shard of which no sample
    could be labelled has a report (its skips are counted) but no tar: it is not done."""
    found = [(t, json.loads(report_path(t).read_text())) for t in targets if report_path(t).exists()]
    reports, done = [r for _, r in found], [r for t, r in found if t.exists()]
    empty = [r["input"] for r in reports if not r["labelled"]]
    images = sum(r["labelled"] for r in done)
    per_image = Counter()
    for r in done:
        per_image.update({int(k): v for k, v in r["boxes_per_image"].items()})
    boxes = sum(r["boxes"] for r in done)
    return {
        "shards": len(targets), "shards_done": len(done), "empty_input_shards": empty,
        "images": images, "images_without_caption": sum(r.get("empty_caption", 0) for r in done),
        "boxes": boxes, "boxes_per_image": boxes / images if images else 0.0,
        "boxes_per_image_histogram": dict(sorted(per_image.items())),
        "score_histogram": [sum(r["score_histogram"][b] for r in done) for b in range(SCORE_BINS)],
        "skipped": dict(sum((Counter(r["skipped_by_reason"]) for r in reports), Counter())),
        "corrupt_input_shards": [r["input"] for r in reports if r["input_corrupt"]],
    }


def format_summary(s: dict) -> str:
    lines = [f"{count(s['images'], 'image')} labelled in {s['shards_done']}/{count(s['shards'], 'shard')}; this run: "
             f"{count(s['images_labelled_now'], 'image')} in {count(s['shards_labelled_now'], 'shard')}, "
             f"{s['images_per_s']:.1f} images/s"]
    skipped = sum(s["skipped"].values())
    lines.append(f"skipped {count(skipped, 'sample')}" + (": " + ", ".join(f"{r} {n}" for r, n in sorted(s["skipped"].items()))
                                                 if skipped else "") + " (keys in each shard's .report.json)")
    if s["boxes"] or s["boxes_per_image_histogram"]:
        counts = " ".join(f"{k}:{n}" for k, n in s["boxes_per_image_histogram"].items())
        lines.append(f"boxes: {s['boxes']} ({s['boxes_per_image']:.2f} per image; images by box count {counts})")
        peak = max(s["score_histogram"]) or 1
        for b, n in enumerate(s["score_histogram"]):
            if n:
                lines.append(f"  score {b / SCORE_BINS:.1f}-{(b + 1) / SCORE_BINS:.1f} "
                             f"{'#' * math.ceil(30 * n / peak):<30} {n}")
    if s["images_without_caption"]:
        lines.append(f"{count(s['images_without_caption'], 'image')} with an empty caption: depth labelled, no boxes")
    if s["empty_input_shards"]:
        lines.append(f"no sample of {', '.join(s['empty_input_shards'])} could be labelled: no output shard "
                     "written (a rerun tries again)")
    if s["corrupt_input_shards"]:
        lines.append(f"input shards with a corrupt tail (labelled up to it): {', '.join(s['corrupt_input_shards'])}")
    return "\n".join(lines)
