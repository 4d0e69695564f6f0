"""The ``mtv label`` verb: argument parsing only; the work is ``mtv.experts.label_shards``."""

from __future__ import annotations

import argparse
import os

from mtv.experts import DEFAULT_BOXES, DEFAULT_DEPTH


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "label", help="pseudo-label image-text shards with Depth Anything V2 and OWLv2 (or the MTV World oracle)",
        description="Writes the input shards again with {key}.depth.png and pseudo-boxes in {key}.json. "
                    "Resumable: a rerun skips finished shards. Run under torchrun to split shards over GPUs.")
    p.add_argument("--in", dest="inputs", nargs="+", required=True,
                   help="input shards: a folder, a glob, a brace pattern or .tar files")
    p.add_argument("--out", required=True, help="folder for the labelled shards and their reports")
    experts = "a hub id in the local HF cache, a save_pretrained directory, 'oracle' (MTV World truth) or 'none'"
    p.add_argument("--depth-expert", default=DEFAULT_DEPTH, help=f"{experts} (default %(default)s)")
    p.add_argument("--box-expert", default=DEFAULT_BOXES, help=f"{experts} (default %(default)s)")
    p.add_argument("--allow-download", action="store_true", help="let transformers download missing expert weights")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where the experts run; auto: this rank's GPU when there is one")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="autocast dtype; auto: bf16 (or fp16) on GPU, fp32 on CPU")
    p.add_argument("--batch-size", type=int, default=16, help="images per expert forward pass (default %(default)s)")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="decoding processes")
    p.add_argument("--shard-index", type=int, default=0, help="this job's part of the shards (with --num-shards)")
    p.add_argument("--num-shards", type=int, default=1, help="parts to split the shards into, e.g. one per node")
    p.add_argument("--score-threshold", type=float, default=0.3, help="keep boxes scoring at least this")
    p.add_argument("--nms-iou", type=float, default=0.5, help="IoU above which a box of the same phrase is suppressed")
    p.add_argument("--max-boxes", type=int, default=10, help="boxes kept per image, best first")
    p.add_argument("--max-phrases", type=int, default=8, help="caption noun phrases queried per image")
    p.add_argument("--max-words", type=int, default=4, help="words kept per phrase (the last ones)")
    p.add_argument("--vocabulary", help="file of extra phrases (one a line) queried in every image")
    p.add_argument("--oracle-box-noise", type=float, default=0.0, help="oracle: box edge noise, fraction of size")
    p.add_argument("--oracle-drop", type=float, default=0.0, help="oracle: probability of leaving a box out")
    p.add_argument("--oracle-depth-noise", type=float, default=0.0, help="oracle: σ of smooth log-depth noise")
    p.add_argument("--seed", type=int, default=0, help="oracle noise seed")
    p.add_argument("--max-skip-rate", type=float, default=0.5, help="stop when more samples than this are bad")
    p.add_argument("--overwrite", action="store_true", help="relabel shards already done (e.g. with new settings)")
    p.set_defaults(fn=_label)


def _label(a: argparse.Namespace) -> None:
    from mtv.experts import BoxFilter, OracleConfig, PhraseConfig, format_summary, label_shards

    limits = {"max_phrases": a.max_phrases, "max_words": a.max_words}
    phrases = PhraseConfig.with_vocabulary_file(a.vocabulary, **limits) if a.vocabulary else PhraseConfig(**limits)
    summary = label_shards(
        a.inputs, a.out, depth=a.depth_expert, boxes=a.box_expert, phrases=phrases,
        box_filter=BoxFilter(a.score_threshold, a.nms_iou, a.max_boxes),
        oracle=OracleConfig(a.oracle_box_noise, a.oracle_drop, a.oracle_depth_noise, a.seed),
        device=a.device, precision=a.precision, allow_download=a.allow_download, batch_size=a.batch_size,
        workers=a.workers, shard_index=a.shard_index, num_shards=a.num_shards, overwrite=a.overwrite,
        max_skip_rate=a.max_skip_rate, progress=True)
    prefix = f"[rank {os.environ['RANK']}] " if int(os.environ.get("WORLD_SIZE", 1)) > 1 else ""
    print("\n".join(prefix + line for line in format_summary(summary).splitlines()))
