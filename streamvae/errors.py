"""One error tree for streamvae: every message names the thing and the fix.

``cli.main`` prints a :class:`StreamvaeError` on one line and exits 2.
"""

from __future__ import annotations


class StreamvaeError(Exception):
    """Root of every error streamvae raises on purpose."""


class ConfigError(StreamvaeError, ValueError):
    """A bad option, parameter or configuration value."""


class DataError(StreamvaeError, ValueError):
    """Input data that cannot be used (unreadable file, missing column, too few rows)."""


class RecordError(StreamvaeError, ValueError):
    """One input record is malformed; ``reason`` is a machine-readable code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class ArtifactError(StreamvaeError):
    """A model artifact is missing, corrupt, tampered with or of an unknown format."""


class NotFittedError(StreamvaeError, RuntimeError):
    """An estimator was used before ``fit`` (or ``calibrate``) was called."""


class NotCalibratedError(NotFittedError):
    """A threshold was used before it was calibrated."""
