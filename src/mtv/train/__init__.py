"""Config → run: the training loop, its checkpoints and its logs."""

from mtv.train.loop import train

__all__ = ["train"]
