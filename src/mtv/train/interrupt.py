"""Ctrl-C during training: finish the step, save a checkpoint at it, say how to resume, exit 130.

The loop asks `StopRequest.now` once per step; the first SIGINT only sets a flag, so no step is cut in half and
the checkpoint is an ordinary one that ``--resume`` continues exactly. A second SIGINT interrupts at once, as
Python does by default, for a step that will not end."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import torch


class TrainingInterrupted(KeyboardInterrupt):
    """Raised after the checkpoint is saved; its message says where and how to resume (the CLI exits 130)."""


class StopRequest:
    def __init__(self):
        self.requested, self._installed, self._previous = False, False, signal.default_int_handler

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():  # signals can only be caught there
            previous = signal.signal(signal.SIGINT, self._on_sigint)
            self._installed = True
            if previous is not None:  # None: a handler not set from Python; the second Ctrl-C then interrupts
                self._previous = previous
        return self

    def __exit__(self, *_) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)

    def _on_sigint(self, *_) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, self._previous)

    def now(self, world_size: int, device: torch.device) -> bool:
        """Whether any rank was interrupted; all ranks must agree, or the others would wait for it forever."""
        if world_size == 1:
            return self.requested
        flag = torch.tensor([float(self.requested)], device=device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item())


def interrupted(run: Path, step: int, checkpoint: Path | None) -> TrainingInterrupted:
    return TrainingInterrupted(f"interrupted at step {step}; saved {checkpoint}; resume with: "
                               f"mtv train --config {run / 'config.yaml'} --resume")
