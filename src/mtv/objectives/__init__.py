"""Objectives: each a small module reading the shared towers' outputs and returning named loss terms.

`vision_language` (objective 1), `self_supervised` (2), `grounding` (3), `depth` (4); `multitask` runs the
towers once per step and sums the enabled objectives with their weights.
"""
