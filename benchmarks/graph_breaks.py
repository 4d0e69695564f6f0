"""How many graphs torch.compile cuts the multi-task forward into, and where: torch._dynamo.explain on the same
`MultiTask` forward `train_step` runs, with bench_train's synthetic batch (all four objectives, or VL only).

    python benchmarks/graph_breaks.py [--size micro] [--vl-only]
"""

from __future__ import annotations

import argparse
from collections import Counter

import torch

from bench_train import OFF, TEXT, VOCAB, synthetic_batch
from mtv.config import build_config
from mtv.models.siglip import build_model, preset_config
from mtv.objectives.multitask import MultiTask


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size", default="micro")
    p.add_argument("--vl-only", action="store_true")
    a = p.parse_args()
    cfg = build_config({"run_dir": "unused", "data": {"train": "unused"}, "steps": 1000, "batch_size": 4,
                        "model": {"preset": a.size, "text_length": TEXT}, **(OFF if a.vl_only else {})})
    model = build_model(preset_config(a.size, vocab_size=VOCAB, text_length=TEXT, pad_id=0, eos_id=1))
    task = MultiTask(model, cfg)
    batch, plan = synthetic_batch(cfg, task, model.config.vision_config, 4, torch.Generator().manual_seed(0))
    found = torch._dynamo.explain(lambda b, s: sum(task(b, s).values()))(batch, plan)
    print(f"{a.size}, {'VL only' if a.vl_only else 'all objectives'}: {found.graph_count} graphs, "
          f"{found.graph_break_count} breaks")
    sites = Counter(f"{f.filename.split('src/')[-1]}:{f.lineno}  {f.line.strip()}"
                    for b in found.break_reasons for f in b.user_stack[-1:])
    for site, n in sites.most_common():
        print(f"{n:3d}  {site}")


if __name__ == "__main__":
    main()
