"""Webdataset shards: deterministic writing, listing, and raw reading that counts what it cannot read.

A sample is a dict ``{"__key__": str, ext: bytes, ...}``; extensions may contain dots
(``view2.depth.png``), keys may not. What each member and JSON field holds is `mtv.data.schema`'s.
"""

from __future__ import annotations

import glob
import json
import os
import tarfile
from collections import Counter
from pathlib import Path
from typing import Iterable, Iterator

import webdataset as wds
from webdataset.tariterators import group_by_keys, tar_file_expander

from mtv.errors import MTVError

DATASET_META = "dataset.json"


def shard_name(index: int) -> str:
    return f"shard-{index:06d}.tar"


class ShardWriter:
    """Writes one tar shard atomically (temporary name, then rename) with fixed metadata, so equal
    samples give byte-identical files."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        self._file = open(self.tmp, "wb")
        self._tar = wds.TarWriter(self._file, user="mtv", group="mtv", mode=0o444, mtime=0.0)

    def write(self, sample: dict) -> None:
        self._tar.write(sample)

    def close(self) -> None:
        try:
            self._tar.close()
            self._file.close()
            os.replace(self.tmp, self.path)
        except BaseException:
            self.abort()
            raise

    def __enter__(self) -> "ShardWriter":
        return self

    def abort(self) -> None:
        """Drops the partial file: the shard's name only ever holds a complete shard."""
        try:
            self._tar.close()
            self._file.close()
        except OSError:
            pass  # the bytes are being thrown away; a full disk may refuse the tar's end blocks
        finally:
            self.tmp.unlink(missing_ok=True)

    def __exit__(self, exc_type, *_):
        if exc_type is None:
            self.close()
        else:
            self.abort()


def list_shards(spec: str | os.PathLike | Iterable[str]) -> list[str]:
    """Shard paths from a directory, a glob, a brace pattern (``shard-{000000..000009}.tar``),
    a single tar, or a list of these."""
    if not isinstance(spec, (str, os.PathLike)):
        return [p for s in spec for p in list_shards(s)]
    spec = str(spec)
    if os.path.isdir(spec):
        paths = sorted(glob.glob(os.path.join(spec, "*.tar")))
        if not paths:
            raise MTVError(f"{spec}: no .tar shards in this directory (make some with `mtv world --out {spec}`)")
        return paths
    if "{" in spec:
        from braceexpand import braceexpand

        return [p for s in braceexpand(spec) for p in list_shards(s)]
    if any(c in spec for c in "*?["):
        paths = sorted(glob.glob(spec))
        if not paths:
            raise MTVError(f"{spec}: the pattern matches no shard files")
        return paths
    if not os.path.exists(spec):
        raise MTVError(f"{spec}: no such shard file or directory")
    return [spec]


def require_tars(paths: list[str], key: str) -> list[str]:
    """``paths``, each checked to be a tar archive by its header: a text file, a JPEG or a zip passed where shards
    belong is a one-line error naming ``key`` and the file, not an empty run. (A tar with a corrupt tail
    passes: reading counts what it loses.)"""
    for path in paths:
        if os.path.isfile(path) and not tarfile.is_tarfile(path):
            raise MTVError(f"{key}: {path} is not a tar shard; pass webdataset .tar shards (a folder, a glob or "
                           "files), e.g. made by mtv world or img2dataset")
    return paths


def dataset_meta(spec: str | os.PathLike) -> dict:
    """The data set's metadata (class list, templates, generator), read from ``dataset.json`` beside the shards."""
    spec = str(spec)
    folder = spec if os.path.isdir(spec) else os.path.dirname(list_shards(spec)[0])
    path = os.path.join(folder, DATASET_META)
    if not os.path.exists(path):
        return {}
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise MTVError(f"{path}: not valid JSON ({e}); regenerate it or delete it") from None


class ReadStats(Counter):
    """Counts of what reading met: ``samples`` read, ``skipped`` samples and the reasons, ``bad_shards``."""

    def skip(self, reason: str, n: int = 1) -> None:
        self["skipped"] += n
        self[f"skipped/{reason}"] += n


def iter_shard(path: str, stats: ReadStats) -> Iterator[dict]:
    """Raw samples of one shard. A missing or corrupt shard (or a corrupt tail) is counted, not raised."""

    def handler(exc: Exception) -> bool:
        stats["bad_shards"] += 1
        stats.skip("corrupt_shard")
        return False  # stop reading this shard; keep the run going

    try:
        stream = open(path, "rb")
    except OSError:
        stats["bad_shards"] += 1
        stats.skip("missing_shard")
        return
    with stream:
        files = tar_file_expander([{"url": path, "stream": stream}], handler=handler)
        try:
            for sample in group_by_keys(files, handler=handler):
                stats["samples"] += 1
                yield sample
        except (tarfile.TarError, OSError, EOFError):
            handler(None)


def read_samples(paths: Iterable[str], stats: ReadStats | None = None) -> Iterator[dict]:
    """Raw samples of several shards in order."""
    stats = ReadStats() if stats is None else stats
    for path in paths:
        yield from iter_shard(path, stats)
