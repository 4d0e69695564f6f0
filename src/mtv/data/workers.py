"""Set-up of DataLoader worker processes, shared by training and labelling."""

from __future__ import annotations

import ctypes
import signal
import sys

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def init_worker(_worker_id: int) -> None:
    """A worker dies with its parent, even one killed with SIGKILL (Linux), instead of running on as an orphan;
    and it ignores SIGINT, so Ctrl-C reaches only the main process, which stops cleanly and ends the workers."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
