"""The ``eval`` and ``report`` verbs: argument blocks and handlers, registered by `mtv.cli`."""

from __future__ import annotations

import argparse


def _eval(a: argparse.Namespace) -> None:
    if a.suite is None:
        from mtv.eval import evaluate

        r = evaluate(a.model, a.data, a.out, batch_size=a.batch_size, max_samples=a.max_samples)
        if r["metrics"]:
            print("eval: " + ", ".join(f"{k} {v:.1%}" for k, v in r["metrics"].items()) + f" — {a.out}/report.md")
        for probe, why in r["not_run"].items():
            print(f"eval: {probe} not run: {why}")
        for probe, why in r["not_applicable"].items():
            print(f"eval: {probe} not applicable: {why} (the dense probes run with --suite) — {a.out}/report.md")
        return
    from mtv.eval.report import format_metric
    from mtv.eval.suite import run_suite

    r = run_suite(a.model, a.data, a.out, a.suite, train=a.train, batch_size=a.batch_size,
                  max_samples=a.max_samples, cache=not a.no_cache, seed=a.seed, epochs=a.epochs,
                  floor=False if a.no_floor else None, sem_convention=a.sem_convention,
                  protocol=a.protocol)
    floor = r["metrics_floor"]
    for k in ("zeroshot_top1", "seg_miou", "depth_rmse", "corr_geo_recall", "corr_sem_pck", "grounding_acc50"):
        if k in r["metrics"]:
            print(f"  {k}: {format_metric(k, r['metrics'][k])}"
                  + (f" (untrained floor {format_metric(k, floor[k])})" if k in floor else ""))
    ran = len(r["probes"]) - len(r["not_run"]) - len(r["not_applicable"])
    print(f"eval: {len(r['metrics'])} metrics from {ran} probes of a {r['config']['encoder']['family']} encoder"
          + (f", not run: {', '.join(r['not_run'])}" if r["not_run"] else "")
          + (f", not applicable: {', '.join(r['not_applicable'])}" if r["not_applicable"] else "")
          + f", skipped {r['skipped']['total']} — {a.out}/report.md")


def _report(a: argparse.Namespace) -> None:
    from mtv.eval.radar import compare

    s = compare(a.runs, a.out)
    print(f"wrote {s['radar']} ({len(s['axes'])} axes) and {s['table']}" if s["radar"] else
          f"wrote {s['table']} (no radar: the runs share fewer than 3 of its metrics)")


def add_parser(sub) -> None:
    v = sub.add_parser("eval", help="zero-shot, retrieval and the probe suite on a saved vision encoder")
    v.add_argument("--model", required=True,
                   help="a saved SiglipModel (SigLIP, SigLIP 2, an mtv export), CLIPModel, Dinov2Model, DINOv3ViTModel "
                        "or other AutoModel ViT directory; image-only encoders report the text probes as not applicable")
    v.add_argument("--data", required=True,
                   help="held-out world shards, or (with --suite real) the folder holding the real benchmarks")
    v.add_argument("--out", required=True, help="folder for report.json and report.md")
    v.add_argument("--suite", help="world, real, or probes separated by commas: zeroshot, retrieval, seg, depth, "
                                   "corr_geo, corr_sem, depth_head, grounding (default: zero-shot and retrieval)")
    v.add_argument("--train", help="world shards the seg and depth probes train on (e.g. runs/demo/world/train)")
    v.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default %(default)s)")
    v.add_argument("--max-samples", type=int, help="images per split at most")
    v.add_argument("--seed", type=int, default=0, help="probe seed (recorded)")
    v.add_argument("--epochs", type=int, help="override the probes' epoch budgets (recorded)")
    v.add_argument("--no-cache", action="store_true", help="recompute frozen features for every probe")
    v.add_argument("--sem-convention", default="centre", choices=("centre", "probe3d"),
                   help="corr_sem keypoint convention: centre of the best upsampled pixel and a <= test (default), "
                        "or Probe3D's top-left corner of the best feature cell and a strict < test (recorded)")
    v.add_argument("--protocol", default="cpu", choices=("cpu", "probe3d"),
                   help="dense-probe profile: cpu (light depth head, processor resolution; default) or probe3d "
                        "(Probe3D's DPT of width 512 at 480 px with its schedule; meant for a GPU) (recorded)")
    v.add_argument("--no-floor", action="store_true",
                   help="skip the untrained floor (on by default for world data; cached under $MTV_CACHE)")
    v.set_defaults(fn=_eval)

    r = sub.add_parser("report", help="overlay several eval runs: radar plot + side-by-side table")
    r.add_argument("runs", nargs="+", metavar="RUN_DIR", help="directories holding report.json")
    r.add_argument("--out", required=True, help="folder for radar.png and compare.md")
    r.set_defaults(fn=_report)
