"""Objectives: each a small module reading the shared towers' outputs and returning named loss terms."""

from mtv.objectives.vision_language import VisionLanguage

__all__ = ["VisionLanguage"]
