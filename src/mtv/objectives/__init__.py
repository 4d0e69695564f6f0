"""Objectives: each a small module reading the shared towers' outputs and returning named loss terms.

Objective 1 (sigmoid image–text) has no parameters of its own beyond the `SiglipModel`'s logit scale and
bias, so it lives in `multitask`, which runs the towers once per step and sums the enabled objectives with
their weights; `self_supervised` (2), `grounding` (3) and `depth` (4) are modules of their own.
"""
