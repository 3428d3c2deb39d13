"""Remembered hashes, so an unchanged re-snapshot reads no file content.

An entry is trusted while the file's (inode, size, mtime_ns, ctime_ns) are unchanged
(ctime also catches edits that put the old mtime back, as ``cp -p`` or ``touch -d`` do).  As in
git's "racy clean" rule, a file modified less than ``RACY_NS`` before the snapshot
started is not remembered: a second write within the same timestamp tick would
otherwise go unnoticed.

The file records which hash its digests are: a cache written with another one
(SHA-256, before format 2 of the manifests) is ignored, so the next snapshot
hashes every file once.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..files import CONTENT_HASH
from .atomic import write_atomic

RACY_NS = 1_000_000_000


class HashCache:
    def __init__(self, path: Path, started_ns: int):
        self.path = Path(path)
        self._started_ns = started_ns
        try:
            data = json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            data = {}
        self._old = data.get("files", {}) if data.get("hash") == CONTENT_HASH else {}
        self._new: dict[str, list] = {}

    def lookup(self, rel: str, info: os.stat_result) -> str | None:
        entry = self._old.get(rel)
        if entry and entry[:4] == [info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns]:
            return entry[4]
        return None

    def remember(self, rel: str, info: os.stat_result, digest: str) -> None:
        if info.st_mtime_ns < self._started_ns - RACY_NS:
            self._new[rel] = [info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns, digest]

    def save(self) -> None:
        """Keep only the files seen by this snapshot (deleted files drop out)."""
        data = {"hash": CONTENT_HASH, "files": self._new}
        write_atomic(self.path, json.dumps(data, separators=(",", ":")).encode())
