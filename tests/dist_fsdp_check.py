"""Run by torchrun (2 gloo ranks) from tests/test_fsdp.py: the engine's `train_step` under FSDP2 against a single
process and against DDP, on the same real batches, and a sharded checkpoint of the FSDP weights.

Every rank decodes the same global batches (2B MTV World scenes per step) and takes its B rows; the references run
in the same process without a process group (``group=None``: no collective).
- ``single``: one process on each whole global batch, against ``fsdp`` (VL + SSL without KoLeo + depth, whose
  per-rank terms average to the global-batch term when ranks hold equal batches; KoLeo's nearest neighbours and
  grounding's per-rank box counts do not);
- ``ddp``: all four objectives on the same per-rank halves, against ``fsdp_all`` and ``fsdp_ac`` (FSDP with
  activation checkpointing).
Writes OUT/result.json (per-step losses and gradient norms of each engine, rank-averaged, and each FSDP engine's
largest parameter difference from its reference), OUT/sharded/ (the FSDP run's checkpoint in DCP form) and
OUT/plain/ (the same weights gathered whole by torch's full state dict, and the single-process weights).
Usage: torchrun --nproc_per_node 2 dist_fsdp_check.py WORLD_SHARDS PROCESSOR_DIR OUT"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

sys.path.insert(0, os.path.dirname(__file__))
from fixtures import SMALL_SSL, train_tree  # noqa: E402
from mtv.config import build_config  # noqa: E402
from mtv.data.batch import Batch  # noqa: E402
from mtv.data.shards import list_shards  # noqa: E402
from mtv.data.stream import Batches, ShardStream, StreamState  # noqa: E402
from mtv.models.siglip import build_model  # noqa: E402
from mtv.models.tokenizer import load_processor  # noqa: E402
from mtv.objectives.multitask import MultiTask  # noqa: E402
from mtv.train import checkpoint  # noqa: E402
from mtv.train.distributed import Dist, setup  # noqa: E402
from mtv.train.loop import _decoder, _model_config, _step_batch  # noqa: E402
from mtv.train.parallel import checkpoint_blocks, distribute, whole  # noqa: E402
from mtv.train.optim import build_optimizer  # noqa: E402
from mtv.train.schedule import ScheduleTable  # noqa: E402
from mtv.train.step import Engine, train_step  # noqa: E402

B, STEPS = 4, 3
DECOMPOSABLE = {"ssl": {**SMALL_SSL, "koleo_weight": 0.0}, "grounding": {"enabled": False}}
ALL_FOUR = {"ssl": SMALL_SSL}


def config(shards: str, batch: int, objectives: dict):
    return build_config(train_tree("unused", shards, steps=10, batch_size=batch, precision="fp32",
                                   optim={"warmup_steps": 1}, **objectives))


def engine(cfg, model_cfg, parallel: str, d: Dist, activation_checkpointing: bool = False
           ) -> tuple[Engine, ScheduleTable]:
    """What `mtv train` builds, from the same seed on every rank and for every engine, with its schedule table."""
    torch.manual_seed(cfg.seed)
    model = build_model(model_cfg, cfg.model.init_logit_scale, cfg.model.init_logit_bias, seed=cfg.seed)
    task = MultiTask(model, cfg, d.group if d.world_size > 1 else None)
    if activation_checkpointing:
        checkpoint_blocks(task)
    net = distribute(task, parallel, d, None, find_unused=False)
    opt, rules = build_optimizer(task, cfg)
    return (Engine(task, net, net, opt, torch.amp.GradScaler("cpu", enabled=False), None, 1, cfg.optim.grad_clip, d),
            ScheduleTable(cfg, task, rules, cfg.optim.lr))


def rank_rows(collated: dict, global_batch: Batch, rank: int, tok, cfg) -> Batch:
    """This rank's B rows of a global batch, with the global batch's iBOT masks for those rows."""
    rows = slice(rank * B, (rank + 1) * B)
    batch = Batch.from_collated({k: v[rows] for k, v in collated.items()}, tok, cfg.model.text_length)
    if global_batch.masks is not None:  # [clean; global 2] of the 2B global images
        clean, second = global_batch.masks.chunk(2)
        batch.masks = torch.cat([clean[rows], second[rows]])
    return batch


def run(engines: dict[str, tuple[Engine, ScheduleTable]], batches: list, d: Dist) -> dict:
    """Each engine's losses (mean over ranks for the distributed ones, as `mtv train` logs) and grad norm."""
    out = {name: [] for name in engines}
    for step, per_engine in enumerate(batches):
        for name, (e, table) in engines.items():
            result = train_step(e, lambda micro: per_engine[name], table.row(step))
            assert not result.bad, (name, step, result.bad)
            terms = {k: float(v) for k, v in result.terms.items()}
            if e.dist.world_size > 1:
                values = torch.tensor(list(terms.values()), dtype=torch.float64)
                dist.all_reduce(values)
                terms = dict(zip(terms, (values / e.dist.world_size).tolist()))
            out[name].append({**terms, "grad_norm": float(result.grad_norm)})
    return out


def largest_difference(sharded: Engine, reference: Engine) -> float:
    pairs = zip(sharded.task.parameters(), reference.task.parameters(), strict=True)
    return max((whole(p).detach() - q.detach()).abs().max().item() for p, q in pairs)


def main() -> None:
    shards, processor_dir, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    out.mkdir(parents=True, exist_ok=True)
    d = setup("cpu", "fsdp")
    torch.set_num_threads(1)
    one = Dist(0, 1, 0, torch.device("cpu"))
    processor = load_processor(processor_dir)
    tok = processor.tokenizer
    result = {}
    for label, objectives in (("decomposable", DECOMPOSABLE), ("all_four", ALL_FOUR)):
        cfg, cfg_global = config(shards, B, objectives), config(shards, 2 * B, objectives)
        model_cfg = _model_config(cfg, tok)
        vision = model_cfg.vision_config
        grid = (vision.image_size // vision.patch_size,) * 2
        stream = Batches(ShardStream(list_shards(shards), _decoder(cfg_global, processor, vision), 2 * B,
                                     cfg.seed, 0, 1, 16, StreamState({})), 0)
        if label == "decomposable":
            engines = {"single": engine(cfg_global, model_cfg, "ddp", one), "fsdp": engine(cfg, model_cfg, "fsdp", d)}
        else:
            engines = {"ddp": engine(cfg, model_cfg, "ddp", d), "fsdp_all": engine(cfg, model_cfg, "fsdp", d),
                       "fsdp_ac": engine(cfg, model_cfg, "fsdp", d, activation_checkpointing=True)}
        batches = []
        for step in range(STEPS):
            collated = next(stream)
            first, table = next(iter(engines.values()))
            global_batch = _step_batch(collated, first.task, table.row(step).plan, tok, cfg_global, grid,
                                       (0, step, 0))
            mine = rank_rows(collated, global_batch, d.rank, tok, cfg)
            batches.append({name: global_batch if name == "single" else mine for name in engines})
        result[label] = run(engines, batches, d)
        reference = engines["single"] if label == "decomposable" else engines["ddp"]
        for name, (e, _) in engines.items():
            if name.startswith("fsdp"):
                result[label][f"{name}_max_param_diff"] = largest_difference(e, reference[0])
        if label == "decomposable":
            save(engines["fsdp"][0], engines["single"][0], cfg, model_cfg, processor_dir, out, d)
    if d.main:
        (out / "result.json").write_text(json.dumps(result, indent=1))
    dist.barrier()
    os._exit(0)  # skip the interpreter teardown, in which gloo can abort a finished rank


def save(sharded: Engine, single: Engine, cfg, model_cfg, processor_dir: Path, out: Path, d: Dist) -> None:
    """The FSDP weights as a sharded checkpoint, the same weights gathered whole into a plain one, and the single
    process's weights into another plain one; each in its own run directory."""
    files = {p.name: p.read_bytes() for p in processor_dir.iterdir() if p.is_file()}
    train_state = {"step": STEPS, "nonfinite_steps": 0, "scaler": {},
                   "rng": [], "data": [], "model_config": model_cfg.to_dict(), "processor_files": files,
                   "config": cfg.model_dump(mode="json")}
    checkpoint.save_sharded(train_state, sharded.task, sharded.opt, out / "sharded", STEPS, 2, d.main)
    full = get_model_state_dict(sharded.task, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if d.main:
        for name, state in (("gathered", full), ("single", single.task.state_dict())):
            checkpoint.save({**train_state, **checkpoint.plain_layout(state), "optimizer": {}}, out / name, STEPS, 2)
    d.barrier()


if __name__ == "__main__":
    main()
