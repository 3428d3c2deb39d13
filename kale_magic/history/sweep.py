"""Leftovers of killed writers, swept from the runs the registry says are over.

A writer (a step saving a value, the cache linking one, an atomic file write)
works in a hidden temporary sibling and renames it into place; killed half way,
it leaves the sibling behind, sometimes gigabytes of it.  Only a run that failed
or was interrupted can hold one, and once it has that status no process of it
writes any more: its steps ended with it, or its kernel is gone.  A run still
running is never touched, even when another kernel sweeps the same folder.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..files import remove_tree
from ..layout import KaleDir
from .store import RunStore

OVER = ("failed", "interrupted")  # the statuses a run holding leftovers can have


@dataclass
class Swept:
    entries: int = 0
    freed: int = 0  # bytes


def sweep(kale: KaleDir, store: RunStore) -> Swept:
    """Delete the leftovers of every failed or interrupted run under ``kale``."""
    swept = Swept()
    for run_id in store.run_ids(OVER):
        for path in kale.run(run_id).leftovers():
            try:
                swept.freed += remove_tree(path)
            except OSError:  # gone meanwhile, or not ours to delete: the next sweep tries again
                continue
            swept.entries += 1
    return swept
