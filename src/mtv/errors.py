"""User-facing errors: the CLI prints these as one line, without a traceback."""


class MTVError(Exception):
    """A mistake the user can fix (bad path, bad config value, bad data); the message names it and the fix."""


class SkipSample(Exception):
    """A sample that cannot be used (undecodable image, empty caption): counted, never silently dropped."""


def writable_dir(path, what: str, option: str):
    """``path`` created and proven writable before any long work starts, or a one-line error naming it, what
    was to be written there and the option that fixes it."""
    import tempfile
    from pathlib import Path

    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise MTVError(f"{path}: cannot write the {what} there ({e.strerror}); choose a writable {option}") from None
    return path
