"""Encoder families `mtv eval` accepts, one adapter module each in this package; each registers itself with
`register` when imported, and `load_encoder` picks the one that recognises a directory's ``config.json``.

A new family is a new module here with a `base.Encoder` subclass decorated with ``@register``; nothing else
changes.
"""

from __future__ import annotations

import importlib
import pkgutil

from mtv.errors import MTVError
from mtv.eval.encoders.base import Encoder, ImageSpec, read_config

_FAMILIES: list[type[Encoder]] = []
_IMPORTED = []  # set once every module of the package has been imported


def register(cls: type[Encoder]) -> type[Encoder]:
    _FAMILIES.append(cls)
    return cls


def families() -> list[type[Encoder]]:
    """Every registered family, those naming their model types first and the fallback last."""
    if not _IMPORTED:
        for info in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{info.name}")
        _IMPORTED.append(True)
    return sorted(_FAMILIES, key=lambda f: f.fallback)


def encoder_class(path: str) -> type[Encoder]:
    """The family of the model saved in ``path``, or a one-line error naming its model_type and what is accepted."""
    config = read_config(path)
    for family in families():
        if family.recognises(config):
            return family
    raise MTVError(f"{path}/config.json: model_type {config.get('model_type')!r} is no encoder family mtv eval "
                   "accepts; give one of: " + "; ".join(f.accepts_text for f in families()))


def load_encoder(path: str) -> Encoder:
    return encoder_class(str(path)).load(str(path))


__all__ = ["Encoder", "ImageSpec", "encoder_class", "families", "load_encoder", "register"]
