"""Checkpoints: written atomically (temporary file, then rename), found by step, pruned to the newest few."""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from mtv.atomic import atomic_path
from mtv.errors import MTVError

_NAME = re.compile(r"^step_(\d{8})\.pt$")


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
    for old in checkpoints(run_dir)[:-keep]:
        old.unlink()
    return path


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
            return path, load(path), bad
        except MTVError as e:
            bad.append(str(e))
    if bad:
        raise MTVError(f"{ckpt_dir(run_dir)}: no checkpoint is readable ({bad[0]}); start a new run_dir")
    return None


def load(path: str | os.PathLike) -> dict:
    path = Path(path)
    if path.is_dir():  # a run directory: its newest checkpoint
        newest = latest(path)
        if newest is None:
            raise MTVError(f"{path}: no checkpoints in {ckpt_dir(path)}; train first or pass a .pt file")
        path = newest
    if not path.is_file():
        raise MTVError(f"{path}: checkpoint not found; pass a run directory or a checkpoints/step_*.pt file")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises many types for a truncated or foreign file
        raise MTVError(f"{path}: not a readable MTV checkpoint ({type(e).__name__}: {str(e).splitlines()[0]})") from None
