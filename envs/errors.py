"""What the environments package raises and how it names a missing extra: its bottom layer (imports
nothing of ours)."""

from __future__ import annotations


class DatasetError(ValueError):
    """An offline dataset that cannot be used; the message names the file and the fix."""


def dataset_error(path, msg) -> None:
    """Raise :class:`DatasetError` for the dataset at ``path``."""
    raise DatasetError(f"dataset.path={path}: {msg}")


def install_hint(extra: str) -> str:
    """How to add an extra, from a source checkout and from an index."""
    return f'pip install -e ".[{extra}]" in a source checkout, or pip install "purejaxrl[{extra}]"'
