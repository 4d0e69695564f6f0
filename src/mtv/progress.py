"""When progress bars are drawn."""

from __future__ import annotations

import contextlib
import sys


def on_terminal(progress: bool) -> bool:
    """``progress`` where stderr is a terminal. Nested bars redraw with cursor movement codes, which a log file
    or a CI console keeps as garbage; there the commands' summaries say what happened instead."""
    return progress and sys.stderr.isatty()


@contextlib.contextmanager
def quiet_hf_bars():
    """transformers draws a bar for every load and save of weights (milliseconds for our models, a carriage
    return in every log); our commands say what they loaded and wrote instead."""
    from transformers.utils import logging as hf

    was = hf.is_progress_bar_enabled()
    hf.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf.enable_progress_bar()
