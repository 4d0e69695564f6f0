"""One owner per run directory: ``run_dir/.lock`` names the process (PID and host) that trains there, so a
second `mtv train` on the same directory stops at once instead of interleaving logs and checkpoints."""

from __future__ import annotations

import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path

from mtv.errors import MTVError, writable_dir

LOCK = ".lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


@contextmanager
def run_lock(run_dir: str | os.PathLike, enabled: bool = True):
    """Holds ``run_dir``'s lock for the ``with`` block. A lock left by a dead process on this host (a SIGKILL)
    is taken over and said so; a live holder, or one on another host, is a one-line error naming it."""
    if not enabled:
        yield
        return
    path = writable_dir(run_dir, "run directory", "run_dir") / LOCK
    me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                holder = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                holder = {}
            if holder.get("host") == me["host"] and isinstance(holder.get("pid"), int) \
                    and not _alive(holder["pid"]):
                print(f"{run_dir}: taking over the lock of PID {holder['pid']}, which is no longer running")
                path.unlink(missing_ok=True)
                continue
            raise MTVError(f"{run_dir}: in use by PID {holder.get('pid', '?')} on {holder.get('host', '?')} since "
                           f"{holder.get('since', '?')}; wait for it, or delete {path} if that run is gone, or "
                           "choose another run_dir") from None
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        break
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
