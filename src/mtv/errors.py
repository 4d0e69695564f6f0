"""User-facing errors: the CLI prints these as one line, without a traceback."""


class MTVError(Exception):
    """A mistake the user can fix (bad path, bad config value, bad data); the message names it and the fix."""


class SkipSample(Exception):
    """A sample that cannot be used (undecodable image, empty caption): counted, never silently dropped."""
