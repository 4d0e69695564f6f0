"""Captions that are true of the rendered image: the main object always with its colour and shape, some of the
visible distractors with a spatial relation, varied by templates and synonyms."""

from __future__ import annotations

import numpy as np

from mtv.world.scene import Camera, Obj

CAPTION_TEMPLATES = ("a photo of {}", "a rendering of {}", "there is {}", "{} on the ground", "a 3d render of {}",
                     "an image of {}", "{}")
ZERO_SHOT_TEMPLATES = ["a photo of the {}.", "a rendering of the {}.", "a 3d render of the {}.",
                       "the {} on the ground.", "an image of the {}."]
SHAPE_WORDS = {"sphere": ("sphere", "ball"), "cube": ("cube", "block"), "cylinder": ("cylinder", "drum"),
               "cone": ("cone",)}
SIZE_WORDS = {"small": ("small", "little", "tiny"), "large": ("large", "big")}
MIN_MENTION_PIXELS = 8  # a distractor this visible may be named; less could be a few stray pixels


def relation(a: Obj, b: Obj, cam: Camera) -> str:
    """Where ``a`` is relative to ``b`` as the camera sees it: the larger of the sideways (camera x) and depth
    (camera z) offsets between their centres decides."""
    R, t = cam.world_to_cam[:3, :3], cam.world_to_cam[:3, 3]
    dx, _, dz = R @ a.centre + t - (R @ b.centre + t)
    if abs(dx) >= abs(dz):
        return "to the left of" if dx < 0 else "to the right of"
    return "in front of" if dz < 0 else "behind"


def noun_phrase(obj: Obj, rng: np.random.Generator, size_prob: float) -> str:
    words = [obj.colour, str(rng.choice(SHAPE_WORDS[obj.shape]))]
    if rng.random() < size_prob:
        words.insert(0, str(rng.choice(SIZE_WORDS[obj.size])))
    return ("an " if words[0][0] in "aeiou" else "a ") + " ".join(words)


def caption(objects: list[Obj], main: int, visible: list[int], cam: Camera, rng: np.random.Generator) -> str:
    """A lowercase caption, e.g. "a photo of a large red cube to the left of a small blue ball, with a green
    cylinder behind it". Distractors are named only if visible, each with probability 3/4."""
    others = [k for k in rng.permutation(len(objects)) if k != main and visible[k] >= MIN_MENTION_PIXELS]
    named = [objects[k] for k in others if rng.random() < 0.75]
    text = noun_phrase(objects[main], rng, size_prob=0.7)
    if named:
        first, rest = named[0], named[1:]
        text += f" {relation(objects[main], first, cam)} {noun_phrase(first, rng, 0.5)}"
        if rest:
            text += ", with " + " and ".join(f"{noun_phrase(o, rng, 0.5)} {relation(o, objects[main], cam)} it"
                                             for o in rest)
    return str(rng.choice(CAPTION_TEMPLATES)).format(text)
