"""The exceptions every layer raises: the bottom of the package (it imports nothing of ours)."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config problem found before compiling; the message says how to fix it (one line)."""


class TrainingDiverged(RuntimeError):
    """A run's loss or parameters became NaN/inf; the last good checkpoint was kept."""
