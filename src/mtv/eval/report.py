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


def render_markdown(report: dict) -> str:
    lines = [f"# Evaluation of `{report['model']}`", "",
             f"Data: `{report['data']}` — {report['num_samples']} samples, {report['num_texts']} distinct captions, "
             f"{report['num_classes']} classes.", "",
             "| metric | value | chance |", "|---|---:|---:|"]
    chance = report.get("chance", {})
    for name, value in report["metrics"].items():
        base = f"{chance[name]:.1%}" if name in chance else "—"
        lines.append(f"| {name} | {value:.1%} | {base} |")
    for probe, why in report.get("not_run", {}).items():
        lines += ["", f"Not run: **{probe}** — {why}."]
    skipped = {k: v for k, v in report.get("skipped", {}).items() if k != "total"}
    if skipped:
        lines += ["", f"Skipped {report['skipped']['total']} samples: "
                  + ", ".join(f"{reason} {n}" for reason, n in sorted(skipped.items())) + "."]
    return "\n".join(lines) + "\n"


def write_report(report: dict, out: str | os.PathLike) -> None:
    with open(os.path.join(out, "report.json"), "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write(render_markdown(report))
