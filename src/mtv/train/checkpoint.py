"""Checkpoints: written atomically (temporary name, then rename), found by step, pruned to the newest few.

Two forms, both named by step. Plain (one process, DDP): ``step_N.pt``, one `torch.save` file written by rank 0.
Sharded (FSDP): a ``step_N/`` directory in `torch.distributed.checkpoint` (DCP) form, where every rank writes its
own shards of the module and optimiser state, beside ``train_state.pt`` (step, schedules, RNG and data positions
of every rank, config, processor), so no rank ever holds the whole model; the directory is renamed into place only
once every rank has written. `load` turns either form into the same plain dict, which `mtv export` reads.
"""

from __future__ import annotations

import os
import re
import shutil
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.checkpoint.state_dict_loader import _load_state_dict_from_keys

from mtv.atomic import atomic_path, disk_error
from mtv.errors import MTVError

_NAME = re.compile(r"^step_(\d{8})(\.pt)?$")
TRAIN_STATE = "train_state.pt"  # in a sharded checkpoint: everything but the module and optimiser tensors


def ckpt_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / "checkpoints"


def save(state: dict, run_dir: str | os.PathLike, step: int, keep: int) -> Path:
    folder = ckpt_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step_{step:08d}.pt"
    # a kill mid-write leaves the previous checkpoint intact; through a Python file a full disk is an OSError
    # (torch's own writer would raise an opaque RuntimeError), which atomic_path says in words
    with atomic_path(path, "run_dir") as tmp, open(tmp, "wb") as f:
        torch.save(state, f)
    _prune(run_dir, keep)
    return path


def _prune(run_dir: str | os.PathLike, keep: int) -> None:
    for old in checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old) if old.is_dir() else old.unlink()


def is_sharded(path: Path) -> bool:
    return path.is_dir() and (path / ".metadata").is_file()


def save_sharded(train_state: dict, task: nn.Module, opt: torch.optim.Optimizer, run_dir: str | os.PathLike,
                 step: int, keep: int, main: bool) -> Path:
    """Called on every rank of an FSDP run: each writes its shards of ``task`` and ``opt`` under a temporary
    name, rank 0 adds ``train_state`` and renames the directory into place, then prunes."""
    folder = ckpt_dir(run_dir)
    path, tmp = folder / f"step_{step:08d}", folder / f".step_{step:08d}.tmp"
    try:
        if main:
            shutil.rmtree(tmp, ignore_errors=True)  # left by a run killed mid-write
            tmp.mkdir(parents=True)
        dist.barrier()
        model_state, optim_state = get_state_dict(task, opt)
        dcp.save({"task": model_state, "optimizer": optim_state}, checkpoint_id=tmp)  # ends in a barrier
        if main:
            torch.save(train_state, tmp / TRAIN_STATE)
            os.replace(tmp, path)
            _prune(run_dir, keep)
    except OSError as e:
        raise disk_error(path, e, "run_dir") from None
    dist.barrier()
    return path


def restore_sharded(path: Path, task: nn.Module, opt: torch.optim.Optimizer) -> None:
    """Every rank reads its own shards of the module and optimiser state from a sharded checkpoint (any number of
    ranks may have written it: DCP reshards)."""
    model_state, optim_state = get_state_dict(task, opt)
    state = {"task": model_state, "optimizer": optim_state}
    dcp.load(state, checkpoint_id=path)
    set_state_dict(task, opt, model_state_dict=state["task"], optim_state_dict=state["optimizer"])


def checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    folder = ckpt_dir(run_dir)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _NAME.match(p.name))


def latest(run_dir: str | os.PathLike) -> Path | None:
    found = checkpoints(run_dir)
    return found[-1] if found else None


def newest_intact(run_dir: str | os.PathLike) -> tuple[Path, dict, list[str]] | None:
    """The newest checkpoint that loads, its state, and why each newer one did not (a crash or a full disk
    can leave a truncated file); None when there is none at all. Unreadable only: nothing is deleted."""
    found = checkpoints(run_dir)
    bad = []
    for path in reversed(found):
        try:
            return path, load(path, tensors=False), bad
        except MTVError as e:
            bad.append(str(e))
    if bad:
        raise MTVError(f"{ckpt_dir(run_dir)}: no checkpoint is readable ({bad[0]}); start a new run_dir")
    return None


def load(path: str | os.PathLike, tensors: bool = True) -> dict:
    """A checkpoint as one plain dict: ``path`` is a run directory (its newest checkpoint), a ``step_N.pt`` file or
    a sharded ``step_N/`` directory. A sharded one is assembled in this process (no process group needed), with
    the module state split into ``model`` and ``objectives`` as the plain form has it; ``tensors=False`` reads
    only its train state (a resuming rank reads its own shards later, through `restore_sharded`)."""
    path = Path(path)
    if path.is_dir() and not is_sharded(path):  # a run directory: its newest checkpoint
        newest = latest(path)
        if newest is None:
            raise MTVError(f"{path}: no checkpoints in {ckpt_dir(path)}; train first or pass a .pt file")
        path = newest
    if not (path.is_file() or is_sharded(path)):
        raise MTVError(f"{path}: checkpoint not found; pass a run directory, a checkpoints/step_*.pt file or a "
                       "checkpoints/step_* directory")
    try:
        if not path.is_dir():
            return torch.load(path, map_location="cpu", weights_only=False)
        state = torch.load(path / TRAIN_STATE, map_location="cpu", weights_only=False)
        return {**state, **_sharded_tensors(path)} if tensors else {**state, "sharded": path}
    except Exception as e:  # torch raises many types for a truncated or foreign file
        raise MTVError(f"{path}: not a readable MTV checkpoint ({type(e).__name__}: {str(e).splitlines()[0]})") from None


def _sharded_tensors(path: Path) -> dict:
    """The module state of a sharded checkpoint in the plain form's layout: ``model`` (the SiglipModel) and
    ``objectives`` (name -> its state); the optimiser's state keyed by parameter name."""
    with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
        warnings.simplefilter("ignore", UserWarning)
        state = _load_state_dict_from_keys(checkpoint_id=path)
    return {**plain_layout(state["task"]), "optimizer": state["optimizer"]}


def plain_layout(task_state: dict) -> dict:
    """A `MultiTask` state dict as the plain checkpoint holds it: ``model`` (the SiglipModel's own state) and
    ``objectives`` (name -> that objective's state)."""
    model, objectives = {}, {}
    for key, value in task_state.items():
        head, _, rest = key.partition(".")
        if head == "model":
            model[rest] = value
        else:  # objectives.<name>.<tensor>
            name, _, tensor = rest.partition(".")
            objectives.setdefault(name, {})[tensor] = value
    return {"model": model, "objectives": objectives}
