"""Loss functions of the MTV objectives, one per module. The sigmoid loss is re-exported at package level
because objective 1 (and the multi-task module) import it from here."""

from mtv.losses.sigmoid import distributed_sigmoid_loss, sigmoid_loss

__all__ = ["distributed_sigmoid_loss", "sigmoid_loss"]
