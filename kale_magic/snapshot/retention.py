"""Dropping old snapshots and the content only they used.

Objects are shared, so an object goes only when no kept manifest names it (temp
files left by a crash go too).  An object younger than ``GRACE_S`` stays even then: it may belong to a snapshot
being taken right now, whose manifest is not written yet.  Run folders that
materialized a dropped snapshot keep working (their hard links keep the data).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from .manifest import list_snapshots, object_name

GRACE_S = 3600


@dataclass
class Pruned:
    snapshots: list[str]
    objects: int
    freed_bytes: int


def prune(store: Path, keep: int) -> Pruned:
    """Keep the ``keep`` newest snapshots; delete the others, their packs and unshared objects."""
    store = Path(store)
    snapshots = list_snapshots(store)
    dropped = snapshots[:-keep] if keep > 0 else snapshots
    freed = 0
    for snapshot in dropped:
        snapshot.manifest.unlink()
        for packed in (store / "packs").glob(f"{snapshot.id}.tar.*"):
            freed += packed.stat().st_size
            packed.unlink()
    live = _referenced(store)
    young = time.time() - GRACE_S
    removed = 0
    for obj in (store / "objects").glob("*/*"):
        info = obj.stat()
        if obj.name not in live and info.st_ctime < young:
            obj.unlink()
            removed += 1
            freed += info.st_size
    return Pruned([s.id for s in dropped], removed, freed)


def _referenced(store: Path) -> set[str]:
    names: set[str] = set()
    for path in (store / "manifests").glob("*.json"):
        try:
            data = json.loads(path.read_text())
        except ValueError:  # cut short by a crash: never usable, names nothing
            continue
        names.update(object_name(entry) for entry in data["files"])
        notebook = data["environment"].get("notebook")
        if notebook:
            names.add(object_name(notebook))
    return names
