"""Turning a snapshot back into a directory tree.

``materialize`` is what a local run's steps use as their working directory: hard
links to the read-only objects (fast, and the user's later edits of the original
files cannot reach them).  ``restore`` is for people: ordinary writable copies.
Both build the tree in a temporary sibling and rename it into place, so ``dest``
is either complete or absent.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path

from .errors import SnapshotError, disk_full
from .manifest import object_name, read_manifest
from .objects import ObjectStore


def materialize(store: Path, snapshot_id: str, dest: Path) -> Path:
    """The snapshot's files at ``dest``, read-only where the platform allows."""
    return _build(store, snapshot_id, Path(dest), ObjectStore.link)


def restore(store: Path, snapshot_id: str, dest: Path) -> Path:
    """Writable copies of the snapshot's files at ``dest`` (which must be empty or absent)."""
    return _build(store, snapshot_id, Path(dest), ObjectStore.copy)


def _build(store: Path, snapshot_id: str, dest: Path, place) -> Path:
    data = read_manifest(Path(store), snapshot_id)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise SnapshotError(f"{dest} already exists and is not an empty folder; choose a new one")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.partial-"))
    try:
        os.chmod(tmp, 0o755)
        _fill(data, ObjectStore(Path(store) / "objects"), tmp, place)
        if dest.exists():
            dest.rmdir()
        os.replace(tmp, dest)
    except BaseException as error:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            raise disk_full(dest.parent, error, f"{dest} was not written") from None
        raise
    return dest


def _fill(data: dict, objects: ObjectStore, tmp: Path, place) -> None:
    for rel in data["dirs"]:
        (tmp / rel).mkdir(parents=True, exist_ok=True)
    for entry in data["files"]:
        name = object_name(entry)
        if not objects.has(name, entry["size"]):
            raise SnapshotError(
                f"snapshot {data['id']} is damaged: the stored content of '{entry['path']}' is "
                f"missing or was modified ({objects.path(name)})")
        place(objects, name, tmp / entry["path"], entry["mode"])
    for link in data["symlinks"]:
        os.symlink(link["target"], tmp / link["path"])
