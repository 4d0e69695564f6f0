"""`mtv ablate`: the paper's Figure 1 ladder — VL, +SSL, +Grounding, +Depth — trained with one budget and
evaluated with one evaluation, so that what each objective adds can be read off one table and one radar.

Each rung is an ordinary run directory (``OUT/<rung>/``): rerunning resumes unfinished rungs and skips
finished ones, so a killed ablation loses at most one checkpoint interval.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from mtv.config import TrainConfig, load_config
from mtv.errors import MTVError
from mtv.train import checkpoint

# Objectives switched on at each rung; everything else of the config is shared.
RUNGS: list[tuple[str, dict[str, bool]]] = [
    ("vl", {"ssl": False, "grounding": False, "depth": False}),
    ("vl+ssl", {"ssl": True, "grounding": False, "depth": False}),
    ("vl+ssl+grounding", {"ssl": True, "grounding": True, "depth": False}),
    ("vl+ssl+grounding+depth", {"ssl": True, "grounding": True, "depth": True}),
]
LABELS = {"vl": "VL", "vl+ssl": "+SSL", "vl+ssl+grounding": "+Grounding", "vl+ssl+grounding+depth": "+Depth"}


def rung_config(config: str, out: Path, rung: str, switches: dict[str, bool], overrides: list[str]) -> TrainConfig:
    flags = [f"{name}.enabled={str(on).lower()}" for name, on in switches.items()]
    return load_config(config, [*overrides, f"run_dir={out / rung}", "vl.enabled=true", *flags])


def ablate(config: str | os.PathLike, out: str | os.PathLike, overrides: list[str] | None = None) -> dict:
    from mtv.eval.radar import radar, table
    from mtv.eval.suite import run_suite
    from mtv.export import export
    from mtv.train import train

    out = Path(out)
    base = load_config(config, overrides)
    if not base.eval.data:
        raise MTVError(f"{config}: eval.data is not set; name the held-out shards every rung is evaluated on")
    results = {}
    for rung, switches in RUNGS:
        cfg = rung_config(str(config), out, rung, switches, overrides or [])
        print(f"== {LABELS[rung]}: training {cfg.steps} steps in {cfg.run_dir}")
        train(cfg, resume=checkpoint.latest(cfg.run_dir) is not None)
        model = export(cfg.run_dir, out / rung / "export")
        report = run_suite(model, cfg.eval.data, out / rung / "eval", suite=cfg.eval.suite,
                           train=cfg.eval.probe_train or cfg.data.train, max_samples=cfg.eval.max_samples,
                           seed=cfg.seed)
        results[rung] = report
    summary = {"config": str(config), "overrides": overrides or [], "steps": base.steps, "batch_size": base.batch_size,
               "rungs": {LABELS[r]: results[r]["metrics"] for r, _ in RUNGS}}
    (out / "ablation.json").write_text(json.dumps(summary, indent=2))
    runs = list(summary["rungs"].items())
    radar(runs, out / "ablation.png")
    (out / "ablation.md").write_text(f"# Objective ablation: {base.steps} steps of {base.batch_size} images per rung\n\n"
                                     f"Config `{config}`; each rung evaluated on `{base.eval.data}`.\n\n" + table(runs))
    print(f"ablation: {out / 'ablation.md'}, {out / 'ablation.png'}")
    return summary
