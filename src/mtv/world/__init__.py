"""MTV World: a procedural 3-D world, ray cast in NumPy, written as webdataset shards with every label the
objectives and evaluations need (caption, class, boxes with phrases, metric depth, semantic labels, and a
second view with known camera motion)."""

from mtv.world.generate import generate_world
from mtv.world.scene import CLASSES, COLOURS, SHAPES

__all__ = ["generate_world", "CLASSES", "COLOURS", "SHAPES"]
