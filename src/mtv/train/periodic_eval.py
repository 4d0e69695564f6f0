"""Probes on the model being trained, every ``eval.every`` steps and at the last, logged beside the losses as
``eval/<metric>`` (metrics.jsonl and TensorBoard).

The probes see a copy of the weights, on the main rank, under saved and restored RNG states: the run's parameters,
random streams and data position are what they would be without it, so a resumed run stays exact. Under FSDP
every rank takes part in gathering the copy; the others wait at a barrier while rank 0 evaluates.
"""

from __future__ import annotations

import random
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from transformers import SiglipConfig, SiglipModel

from mtv.config import TrainConfig
from mtv.errors import MTVError
from mtv.eval.encoders.base import ImageSpec
from mtv.eval.encoders.siglip import SiglipEncoder
from mtv.eval.profiles import PROFILES
from mtv.eval.benchmarks.real import RealData
from mtv.eval.suite import NEEDS_HEADS, WorldData, is_world, make_context, parse_probes, run_probes
from mtv.objectives.multitask import MultiTask
from mtv.train.distributed import Dist
from mtv.train.parallel import is_sharded

DENSE = ("seg", "depth")  # the probes that fit on a training split


@contextmanager
def preserved_rng() -> Iterator[None]:
    """Every random stream training draws from (Python, NumPy, torch CPU and CUDA) as it was on entry."""
    py, npy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=range(torch.cuda.device_count()) if torch.cuda.is_available() else []):
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)


class PeriodicEval:
    """``due(step)`` says when; calling it returns the step's ``eval/*`` metrics on rank 0 ({} elsewhere)."""

    def __init__(self, cfg: TrainConfig, run: Path, tokenizer, model_cfg: SiglipConfig, d: Dist):
        self.cfg, self.every, self.d = cfg, cfg.eval.every, d
        if not self.every:
            return
        _, self.probes = parse_probes(cfg.eval.during)
        if any(p in NEEDS_HEADS for p in self.probes):
            raise MTVError(f"eval.during: {cfg.eval.during!r} names a head probe; heads are exported with the "
                           f"model, evaluate them with mtv eval on the export (during: {', '.join(DENSE)}, "
                           "zeroshot, retrieval, corr_geo or corr_sem)")
        self.model_cfg, self.tokenizer = model_cfg, tokenizer
        self.image = ImageSpec.from_pretrained(run / "processor")
        if d.main:
            data, train = cfg.eval.data, cfg.eval.probe_train or cfg.data.train
            train = train if any(p in DENSE for p in self.probes) else None
            self.source = WorldData(data, train, cfg.eval.max_samples, cfg.seed) if is_world(data) \
                else RealData(data, cfg.eval.max_samples)

    def due(self, step: int) -> bool:
        return bool(self.every) and (step % self.every == 0 or step == self.cfg.steps)

    def __call__(self, task: MultiTask) -> dict[str, float]:
        state = _weights(task)
        if not self.d.main:
            self.d.barrier()
            return {}
        with preserved_rng(), torch.no_grad():
            model = SiglipModel(self.model_cfg)
            model.load_state_dict(state)
            encoder = SiglipEncoder(model.to(self.d.device).eval(), self.image, self.cfg.run_dir, self.tokenizer)
            ctx = make_context(encoder, {}, PROFILES["cpu"], seed=self.cfg.seed)
            metrics, _, not_run, _, _ = run_probes(ctx, self.source, self.probes, strict=False)
        self.d.barrier()
        if not metrics:
            raise MTVError(f"eval.data {self.cfg.eval.data}: none of eval.during ({self.cfg.eval.during}) could run ("
                           + "; ".join(f"{k}: {v}" for k, v in not_run.items()) + ")")
        return {f"eval/{k}": v for k, v in metrics.items()}


def _weights(task: MultiTask) -> dict[str, torch.Tensor]:
    """The SiglipModel's full state; under FSDP a collective that gathers the shards (every rank calls it)."""
    if not is_sharded(task):
        return task.model.state_dict()
    full = get_model_state_dict(task, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {k.removeprefix("model."): v for k, v in full.items() if k.startswith("model.")}
