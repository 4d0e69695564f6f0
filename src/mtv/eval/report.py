"""Run reports: ``report.json`` for machines (radar plots, comparisons) and ``report.md`` for people."""

from __future__ import annotations

import json
import os
import platform


def versions() -> dict[str, str]:
    """Library versions that change numbers, recorded so a result can be reproduced."""
    import torch
    import transformers

    import mtv

    return {"mtv": mtv.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version()}


REFERENCE_TITLES = {"metrics_floor": "untrained floor", "metrics_prior": "image-free prior"}  # report key -> column
LOWER_IS_BETTER = ("rmse", "absrel")  # every other metric is a fraction, shown as a percentage


def format_metric(name: str, value: float) -> str:
    return f"{value:.3f}" if name.endswith(LOWER_IS_BETTER) else f"{value:.1%}"


def _render_suite(report: dict) -> list[str]:
    """Probe-suite reports: the metric table, then each probe's recorded config (seeds, budgets, depth protocol)."""
    sizes = ", ".join(f"{name} {n}" for name, n in report["num_samples"].items())
    lines = [f"# Evaluation of `{report['model']}` — suite `{report['suite']}`", "",
             f"Data: `{report['data']}`" + (f", probes trained on `{report['train']}`" if report.get("train") else "")
             + f" — images: {sizes}.", ""]
    chosen = report.get("config", {}).get("protocol")
    if chosen:
        lines += [f"Probe profile: `{chosen['name']}` (`mtv eval --protocol`; docs/EVALUATION.md).", ""]
    refs = {title: report[field] for field, title in REFERENCE_TITLES.items() if report.get(field)}
    refs["chance"] = report.get("chance", {})
    lines += ["| metric | value | " + " | ".join(refs) + " |", "|---|---:|" + "---:|" * len(refs)]
    for name, value in report["metrics"].items():
        cells = [format_metric(name, ref[name]) if name in ref else "—" for ref in refs.values()]
        lines.append(f"| {name} | {format_metric(name, value)} | " + " | ".join(cells) + " |")
    lines += ["", "Lower is better for rmse and absrel; every other metric is a fraction of 1 shown in %."]
    floor = report.get("config", {}).get("floor")
    if floor:
        lines += ["", f"Untrained floor: the same probes, seeds and data on an encoder of this architecture that "
                      f"took no training step, built with init seed {floor['seed']} ({floor['source']}). "
                      "Image-free prior: a prediction that never looks at the test image (docs/EVALUATION.md)."]
    diag = report.get("diagnostics")
    if diag:
        floor_diag = (floor or {}).get("diagnostics") or {}
        lines += ["", "Effective rank of the held-out features (exp entropy of the singular values, out of "
                      f"{diag['dims']} dimensions): pooled {diag['pooled_effective_rank']:.1f}, patch tokens "
                      f"{diag['tokens_effective_rank']:.1f}"
                  + (f"; untrained floor: pooled {floor_diag['pooled_effective_rank']:.1f}, patch tokens "
                     f"{floor_diag['tokens_effective_rank']:.1f}" if floor_diag else "") + "."]
    probes = {k: v for k, v in report["config"].items() if isinstance(v, dict) and k not in ("floor", "protocol")}
    if probes:
        lines += ["", "## Probe settings", ""]
        settings = lambda cfg: "; ".join(f"{k} {v}" for k, v in cfg.items())  # noqa: E731
        for name, cfg in probes.items():
            lines.append(f"- **{name}**: " + settings({k: v for k, v in cfg.items() if k not in ("per_class", "per_class_iou", "protocols")}))
            lines += [f"  - `{prefix}`: {settings(sub)}" for prefix, sub in cfg.get("protocols", {}).items()]
    return lines


def render_markdown(report: dict) -> str:
    if "suite" in report:
        lines = _render_suite(report)
    else:
        lines = _render_basic(report)
    encoder = report.get("config", {}).get("encoder")
    if encoder:
        image = encoder["image"]
        lines[2:2] = [f"Encoder: {encoder['family']} (`{encoder['class']}`), images resized whole to "
                      f"{image['size'][0]}×{image['size'][1]} ({image['resample']}), mean {image['mean']}, std "
                      f"{image['std']} (from `{os.path.basename(image['source'])}`).", ""]
    for probe, why in report.get("not_run", {}).items():
        lines += ["", f"Not run: **{probe}** — {why}."]
    for probe, why in report.get("not_applicable", {}).items():
        lines += ["", f"Not applicable: **{probe}** — {why}."]
    skipped = {k: v for k, v in report.get("skipped", {}).items() if k != "total"}
    if skipped:
        noun = "items" if "suite" in report else "samples"  # suites also skip pairs and keypoints
        lines += ["", f"Skipped {report['skipped']['total']} {noun}: "
                  + ", ".join(f"{reason} {n}" for reason, n in sorted(skipped.items())) + "."]
    return "\n".join(lines) + "\n"


def _render_basic(report: dict) -> list[str]:
    lines = [f"# Evaluation of `{report['model']}`", "",
             f"Data: `{report['data']}` — {report['num_samples']} samples, {report['num_texts']} captions, "
             f"{report['num_classes']} classes.", "",
             "| metric | value | chance |", "|---|---:|---:|"]
    chance = report.get("chance", {})
    for name, value in report["metrics"].items():
        base = f"{chance[name]:.1%}" if name in chance else "—"
        lines.append(f"| {name} | {value:.1%} | {base} |")
    return lines


def write_report(report: dict, out: str | os.PathLike) -> None:
    from mtv.atomic import write_text

    write_text(os.path.join(out, "report.json"), json.dumps(report, indent=2) + "\n")
    write_text(os.path.join(out, "report.md"), render_markdown(report))
