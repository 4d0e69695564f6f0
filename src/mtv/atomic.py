"""Files that appear whole or not at all, and write failures (a full or read-only disk) as one-line errors."""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

from mtv.errors import MTVError

DISK_ERRORS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
               errno.EROFS: "read-only file system", errno.EACCES: "permission denied"}


def is_disk_error(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in DISK_ERRORS


def disk_error(path: str | os.PathLike, e: OSError, option: str = "--out") -> MTVError:
    """The one-line error for a failed write of ``path``, the cause in words."""
    why = DISK_ERRORS.get(e.errno, e.strerror or str(e))
    return MTVError(f"{path}: cannot write it: {why}; free space, or choose a writable {option}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, option: str = "--out"):
    """Yields a temporary name beside ``path`` to write to; renamed onto ``path`` when the block succeeds.
    On any failure the temporary file is removed, and a failed write becomes `disk_error`."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise disk_error(path, e, option) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike, data: bytes, option: str = "--out") -> None:
    with atomic_path(path, option) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str, option: str = "--out") -> None:
    write_bytes(path, text.encode(), option)
