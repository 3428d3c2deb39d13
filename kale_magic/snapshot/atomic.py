"""Snapshot files are written atomically (:mod:`kale_magic.files`); a full disk says so in one sentence."""

from __future__ import annotations

from pathlib import Path

from ..files import atomic_write, is_disk_full
from .errors import disk_full


def write_atomic(path: Path, data: bytes) -> None:
    try:
        atomic_write(path, data)
    except OSError as error:
        if is_disk_full(error):
            raise disk_full(path.parent, error) from None
        raise
