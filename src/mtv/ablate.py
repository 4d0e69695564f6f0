"""`mtv ablate`: which objective adds what, read off one table and one radar. Every rung of a design trains with one
budget and is evaluated with one evaluation, over several seeds, so that each difference comes with the
seed-to-seed noise it has to stand out of (paired t intervals, :mod:`mtv.stats`).

Designs, over the registered objectives in their order (the built-ins: VL, SSL, Grounding, Depth): the paper's
Figure 1 ``ladder`` (VL, +SSL, +Grounding, +Depth), ``leave-one-out`` (every objective, then each but the first
dropped) and ``pairs`` (the first alone and with each other one).

Each (rung, seed) is an ordinary run directory, ``OUT/<objectives>/seed<k>/`` with ``export/`` and ``eval/`` in
it: rerunning skips every evaluated one and resumes an unfinished training (either only if it was made with the
same config), so a killed ablation loses at most one checkpoint interval. The directory is named by the
objectives switched on, so designs written into one OUT share the rungs they have in common (VL, all four)
instead of training them twice.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from mtv import stats
from mtv.atomic import write_text
from mtv.config import TrainConfig, first_difference, load_config
from mtv.errors import MTVError
from mtv.eval.radar import radar, reference_level, table
from mtv.eval.report import LOWER_IS_BETTER, REFERENCE_TITLES, format_metric
from mtv.eval.suite import run_suite
from mtv.export import export
from mtv.objectives.base import registered
from mtv.train import checkpoint, train

DESIGN_NAMES = ("ladder", "leave-one-out", "pairs")


def designs() -> dict[str, list[tuple[str, dict[str, bool]]]]:
    """design -> rungs: (label, switch of each objective after the first, which every rung trains). Built from the
    registered objectives in their order, so a plug-in objective gets its rungs without an edit here."""
    base, *others = registered().values()
    off = {o.name: False for o in others}
    every = {o.name: True for o in others}
    return {
        "ladder": [(base.title, off)] + [(f"+{o.title}", {p.name: i <= k for i, p in enumerate(others)})
                                         for k, o in enumerate(others)],
        "leave-one-out": [("all", every)] + [(f"−{o.title}", {**every, o.name: False}) for o in others],
        "pairs": [(base.title, off)] + [(f"{base.title}+{o.title}", {**off, o.name: True}) for o in others],
    }


def comparisons() -> dict[str, list[tuple[str, str]]]:
    """design -> (rung, against): the difference rung − against is what one objective adds, in every design."""
    rungs = {design: [label for label, _ in found] for design, found in designs().items()}
    ladder, loo, pairs = rungs["ladder"], rungs["leave-one-out"], rungs["pairs"]
    return {"ladder": list(zip(ladder[1:], ladder[:-1])), "leave-one-out": [(loo[0], r) for r in loo[1:]],
            "pairs": [(r, pairs[0]) for r in pairs[1:]]}


REFERENCES = {"floor": "metrics_floor", "prior": "metrics_prior"}  # ablation.json key -> eval report key
REFERENCE_COLUMNS = {key: REFERENCE_TITLES[field] for key, field in REFERENCES.items()}


def rung_dir(switches: dict[str, bool]) -> str:
    """``vl+ssl+…``: named by what is trained, so the same rung of two designs is the same directory."""
    return "+".join([next(iter(registered())), *(name for name, on in switches.items() if on)])


def rung_config(config: str, run_dir: Path, switches: dict[str, bool], overrides: list[str], seed: int) -> TrainConfig:
    flags = [f"{name}.enabled={str(on).lower()}" for name, on in switches.items()]
    base = f"{next(iter(registered()))}.enabled=true"
    return load_config(config, [*overrides, f"run_dir={run_dir}", f"seed={seed}", base, *flags])


def run_rung(cfg: TrainConfig) -> dict:
    """Trains (resuming), exports and evaluates one (rung, seed); one already evaluated is read back, not redone.
    The eval seed (probe init, sample choice) follows the training seed, so a seed's whole result varies together."""
    run = Path(cfg.run_dir)
    _check_same_config(cfg, run)
    done = run / "eval" / "report.json"
    if done.exists():
        print(f"== {run}: evaluated already, skipped")
        return json.loads(done.read_text())
    print(f"== {run}: training {cfg.steps} steps")
    train(cfg, resume=checkpoint.latest(run) is not None)
    model = export(run, run / "export")
    return run_suite(model, cfg.eval.data, run / "eval", suite=cfg.eval.suite,
                     train=cfg.eval.probe_train or cfg.data.train, max_samples=cfg.eval.max_samples, seed=cfg.seed)


def _check_same_config(cfg: TrainConfig, run: Path) -> None:
    """A run already in ``run`` is reused only if it was made with this config, so that changing the YAML or an
    override never mixes old and new runs in one table. Not compared: ``run_dir`` (a moved folder is the same run),
    the settings of an objective that is off in both, and keys the saved config lacks (added since)."""
    saved_path = run / "config.yaml"
    if not saved_path.exists():
        return
    saved = yaml.safe_load(saved_path.read_text(encoding="utf-8"))
    now = cfg.model_dump(mode="json")
    ignored = frozenset({"run_dir", *(name for name in registered()
                                      if not saved.get(name, {}).get("enabled", True) and not now[name]["enabled"])})
    if first := first_difference(saved, now, ignored):
        key, was, asked = first
        raise MTVError(f"{run}: was made with {key}={was!r}, the ablation now says {asked!r}; remove that folder to "
                       f"redo it, or pass another --out")


def _summary(runs: dict[str, dict[str, dict]]) -> dict:
    """rung -> metric -> mean, std, interval over the seeds that report it."""
    return {rung: {k: stats.summarize([m[k] for m in by_seed.values() if k in m])
                   for k in dict.fromkeys(k for m in by_seed.values() for k in m)}
            for rung, by_seed in runs.items()}


def _comparisons(runs: dict[str, dict[str, dict]], design: str) -> list[dict]:
    """Paired differences, seed by seed, of each metric both rungs of a comparison report."""
    found = []
    for rung, against in comparisons()[design]:
        new, old = runs[rung], runs[against]
        for k in dict.fromkeys(k for m in new.values() for k in m):
            seeds = [s for s in new if s in old and k in new[s] and k in old[s]]
            if seeds:
                found.append({"rung": rung, "against": against, "metric": k, **stats.paired(
                    [new[s][k] for s in seeds], [old[s][k] for s in seeds], k.endswith(LOWER_IS_BETTER))})
    return found


def _columns(summary: dict) -> tuple[list[tuple[str, dict]], list[dict]]:
    """The summary as the radar and table take it: (rung, metric -> mean) runs and their metric -> std spreads."""
    return ([(rung, {k: s["mean"] for k, s in by_metric.items()}) for rung, by_metric in summary.items()],
            [{k: s["std"] for k, s in by_metric.items()} for by_metric in summary.values()])


def _signed(metric: str, value: float) -> str:
    return ("+" if value > 0 else "") + format_metric(metric, value)


def _verdict(c: dict) -> str:
    if c["ci95"] is None:
        return "one seed: no interval"
    if not c["significant"]:
        return "within noise"
    return "**significant** " + ("↑ better" if c["better"] else "↓ worse")


def _comparison_table(comparisons: list[dict]) -> str:
    lines = ["| metric | comparison | difference [95% interval] | verdict |", "|---|---|---:|---|"]
    for c in comparisons:
        k, ci = c["metric"], c["ci95"]
        diff = _signed(k, c["diff_mean"]) + (f" [{_signed(k, ci[0])}, {_signed(k, ci[1])}]" if ci else "")
        lines.append(f"| {k} | {c['rung']} vs {c['against']} | {diff} | {_verdict(c)} |")
    return "\n".join(lines) + "\n"


def _markdown(result: dict, data: str) -> str:
    """ablation.md: mean ± std per rung (and the reference levels), then the paired comparisons."""
    n = len(result["seeds"])
    means, spreads = _columns(result["summary"])
    refs = [(REFERENCE_COLUMNS[key], result[key]) for key in REFERENCES if key in result]
    command = " ".join([f"`{result['config']}`", *(f"`{o}`" for o in result["overrides"])])
    return (f"# Objective ablation ({result['design']}): {result['steps']} steps of {result['batch_size']} images "
            f"per rung, {n} seed{'s' if n > 1 else ''}\n\n"
            f"Config {command}; every rung evaluated on `{data}`, seeds {', '.join(map(str, result['seeds']))}. "
            "Cells: mean ± sample std over the seeds.\n\n"
            + table(means + refs, spreads + [None] * len(refs))
            + "\n## What each objective changes\n\n" + _comparison_table(result["comparisons"])
            + f"\nA difference is rung − the rung it is compared against, taken seed by seed over the {n} shared "
            "seeds. It is marked **significant** when its 95% Student-t interval excludes 0, with ↑ for a change "
            "for the better (higher, or lower for rmse and absrel) and ↓ for the worse; otherwise it is within "
            "seed-to-seed noise and says nothing either way.\n")


def ablate(config: str | os.PathLike, out: str | os.PathLike, overrides: list[str] | None = None, seeds: int = 3,
           design: str = "ladder") -> dict:
    """Trains, exports and evaluates every rung of ``design`` with seeds base, base+1, … (base = the config's
    ``seed``); writes ablation.json, ablation.md and ablation.png in ``out`` and returns what ablation.json holds."""
    if design not in DESIGN_NAMES:
        raise MTVError(f"unknown design {design!r}; pick one of {', '.join(DESIGN_NAMES)}")
    if seeds < 1:
        raise MTVError(f"seeds must be at least 1, got {seeds}")
    out, overrides = Path(out), overrides or []
    base = load_config(config, overrides)
    if not base.eval.data:
        raise MTVError(f"{config}: eval.data is not set; name the held-out shards every rung is evaluated on")
    seed_values = [base.seed + s for s in range(seeds)]
    reports = {rung: {str(seed): run_rung(rung_config(str(config), out / rung_dir(switches) / f"seed{seed}",
                                                       switches, overrides, seed))
                      for seed in seed_values}
               for rung, switches in designs()[design]}
    runs = {rung: {seed: report["metrics"] for seed, report in by_seed.items()} for rung, by_seed in reports.items()}
    result = {"config": str(config), "overrides": overrides, "design": design, "seeds": seed_values,
              "steps": base.steps, "batch_size": base.batch_size, "runs": runs, "summary": _summary(runs),
              "comparisons": _comparisons(runs, design)}
    every_report = [r for by_seed in reports.values() for r in by_seed.values()]
    result |= {key: ref for key, field in REFERENCES.items() if (ref := reference_level(every_report, field))}
    write_text(out / "ablation.json", json.dumps(result, indent=2, ensure_ascii=False))
    write_text(out / "ablation.md", _markdown(result, base.eval.data))
    means, spreads = _columns(result["summary"])
    radar(means, out / "ablation.png", spreads=spreads, floor=result.get("floor"))
    print(f"ablation: {out / 'ablation.md'}, {out / 'ablation.png'}")
    return result
