"""Small file utilities every layer shares: atomic writes, content hashes, sizes for people.

An atomic write goes to a temporary sibling that is renamed over the target, so a
reader sees the old content or the new one, never half of it; a failed write
leaves nothing behind.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

_CHUNK = 1 << 20
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


@contextmanager
def replacing(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on failure it goes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(name)
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike, data: bytes | str) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` atomically."""
    with replacing(path) as tmp:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)


def atomic_write_json(path: str | os.PathLike, data, **dumps) -> None:
    atomic_write(path, json.dumps(data, **dumps))


def read_json(path: str | os.PathLike) -> dict | None:
    """A JSON object from ``path``; None when it is missing, unreadable or not an object."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_disk_full(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno == errno.ENOSPC


def link_or_copy(source: Path, target: Path) -> None:
    """A hard link (same bytes, no copy); a copy only across file systems."""
    try:
        os.link(source, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        shutil.copy2(source, target)


def remove_tree(path: str | os.PathLike) -> int:
    """Delete a file or a tree file by file; the bytes released (a file with other hard links frees none)."""
    freed = 0
    path = Path(path)
    if not path.is_dir() or path.is_symlink():
        info = os.lstat(path)
        path.unlink()
        return info.st_size if info.st_nlink == 1 else 0
    for dirpath, _, filenames in os.walk(path):
        for filename in filenames:
            file = os.path.join(dirpath, filename)
            info = os.lstat(file)
            os.unlink(file)
            if info.st_nlink == 1:
                freed += info.st_size
    shutil.rmtree(path, ignore_errors=True)
    return freed


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as handle:
        buffer = bytearray(_CHUNK)
        view = memoryview(buffer)
        while count := handle.readinto(buffer):
            digest.update(view[:count])
    return digest.hexdigest()


def human_size(size: int | float | None) -> str:
    """``1.5 KiB``, ``2.0 GiB``; ``?`` when the size is unknown."""
    if size is None:
        return "?"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def parse_size(text: str | int) -> int:
    """``"500M"``, ``"2G"``, ``"1.5GiB"`` or a plain byte count -> bytes."""
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", str(text), re.IGNORECASE)
    if not match:
        raise ValueError(f"not a size: {text!r} (use e.g. 500M or 2G)")
    number, unit = match.groups()
    return int(float(number) * _UNITS[unit.upper()])
