"""The cache index on disk, and clearing it.

One entry per successful step execution, ``.kale/cache/entries/<key>.json`` (see
:mod:`kale_magic.layout`): the step's key parts, the workspace files it read with
their digests, its outputs' checksums, its metrics and the runs holding the files.
The values themselves stay in the runs' ``data/`` folders; the cache only points at them.  Which run did what (for
``--resume``) is the run registry's business (:mod:`kale_magic.history`).

Every entry is written whole to a temporary sibling and renamed, so concurrent
readers never see half of one; plain JSON keeps the index readable by hand.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from ..files import atomic_write_json, human_size, read_json, remove_tree
from ..layout import KaleDir

ENTRY_FIELDS = frozenset({"key", "pipeline", "step", "run_id", "locations", "parts", "outputs", "metrics"})


class CacheIndex:
    """Entries by key, under ``.kale/cache/entries``."""

    def __init__(self, kale: KaleDir):
        self.kale = kale
        self._latest: dict[tuple[str, str], dict] | None = None  # (pipeline, step) -> newest entry, see latest

    # entries --------------------------------------------------------------------------------
    def entry(self, key: str) -> dict | None:
        """The entry for ``key``; a damaged one counts as absent (the step then simply runs)."""
        entry = read_json(self.kale.cache_entry(key))
        if entry is None or not ENTRY_FIELDS <= entry.keys() or entry["key"] != key:
            return None
        return entry

    def put(self, entry: dict) -> None:
        atomic_write_json(self.kale.cache_entry(entry["key"]), entry, indent=1, sort_keys=True)
        if self._latest is not None:
            self._note_latest(entry)

    def remove(self, key: str) -> None:
        self.kale.cache_entry(key).unlink(missing_ok=True)

    def entries(self) -> list[dict]:
        folder = self.kale.cache_entries
        found = (read_json(p) for p in folder.glob("*.json")) if folder.is_dir() else ()
        return [e for e in found if e is not None]

    def variants(self, base: str) -> list[dict]:
        """The entries of one base key (same code, inputs and versions; other files read), newest first."""
        found = (read_json(path) for path in self.kale.cache_variants(base))
        valid = [e for e in found if e is not None and ENTRY_FIELDS <= e.keys() and e.get("base") == base]
        return sorted(valid, key=lambda e: e.get("created", 0), reverse=True)

    def latest(self, pipeline: str, step: str) -> dict | None:
        """The most recent entry of this step, to explain what changed since.  The entries are read once
        per index (one run) and kept up to date by :meth:`put`: reading them all again for every step
        made a run quadratic in its number of steps (an entry another kernel writes meanwhile is missed,
        which costs an explanation, never a result)."""
        if self._latest is None:
            self._latest = {}
            for entry in self.entries():
                self._note_latest(entry)
        return self._latest.get((pipeline, step))

    def _note_latest(self, entry: dict) -> None:
        where = (entry.get("pipeline"), entry.get("step"))
        known = self._latest.get(where)
        if known is None or entry.get("created", 0) >= known.get("created", 0):
            self._latest[where] = entry

    def value_dir(self, run_id: str, step: str, name: str) -> Path:
        return self.kale.run(run_id).value(step, name)


# clearing ---------------------------------------------------------------------------------

@dataclass
class Cleared:
    entries: int
    runs: int
    freed: int  # bytes actually released (values hard-linked into kept runs stay), leftovers included
    leftovers: int = 0  # temporary files killed writers had left

    def __str__(self) -> str:
        removed = f"{self.entries} cache entries and the saved values of {self.runs} runs"
        if self.leftovers:
            removed = removed.replace(" and", ",", 1) + f" and {self.leftovers} temporary files of killed writers"
        return (f"kale: removed {removed}, freed {human_size(self.freed)} (run history, logs and executed "
                "notebooks are kept)")


def clear(kale: KaleDir, older_than: float | None = None) -> Cleared:
    """Forget cached step results and delete the saved values of runs, to free disk.

    With ``older_than`` (days), only entries not used and runs not written for that
    long go.  Run records, logs and executed notebooks stay, so history is kept.
    Temporary files killed writers left go whatever their age (:mod:`kale_magic.history.sweep`).
    The public entry point of ``%kale_cache --clear`` and ``kale-magic cache clear``.
    """
    from ..history.store import RunStore
    from ..history.sweep import Swept, sweep

    index = CacheIndex(kale)
    cutoff = time.time() - older_than * 86400 if older_than is not None else None
    swept = Swept()
    if kale.runs_db.is_file():
        with RunStore(kale.runs_db) as store:
            swept = sweep(kale, store)

    def old(stamp: float) -> bool:
        return cutoff is None or stamp < cutoff

    runs, freed = 0, 0
    for run in kale.run_dirs():
        if run.data.is_dir() and old(run.data.stat().st_mtime):
            freed += remove_tree(run.data)
            runs += 1
    removed = 0
    for entry in index.entries():
        alive = [r for r in entry.get("locations", ()) if kale.run(r).data.is_dir()]
        if old(entry.get("used", 0)) or not alive:
            index.remove(entry["key"])
            removed += 1
    return Cleared(removed, runs, freed + swept.freed, swept.entries)


def holdings(kale: KaleDir, now: float | None = None) -> str:
    """What the cache holds, one line per cached step result: pipeline and step, age, size of its saved
    values, the run that produced it; then how to free the disk."""
    entries = sorted((e for e in CacheIndex(kale).entries() if ENTRY_FIELDS <= e.keys()),
                     key=lambda e: (e.get("pipeline", ""), e["step"], -e.get("created", 0)))
    clear_line = "%kale_cache --clear [--older-than DAYS] (kale-magic cache --clear) frees their disk"
    if not entries:
        return f"The step cache in {kale.cache_entries.parent} is empty."
    now = time.time() if now is None else now
    rows = [(f"{e.get('pipeline', '?')}/{e['step']}", _age(now - e.get("created", now)),
             human_size(sum(f.get("size", 0) for record in e["outputs"].values()
                            for f in record.get("files", {}).values())), e["run_id"]) for e in entries]
    widths = [max(len(row[i]) for row in rows + [("step", "age", "size", "run")]) for i in range(3)]
    lines = [f"{len(entries)} cached step result{'s' if len(entries) > 1 else ''} in {kale.cache_entries.parent}:",
             f"  {'step':<{widths[0]}}  {'age':>{widths[1]}}  {'size':>{widths[2]}}  produced by run"]
    lines += [f"  {step:<{widths[0]}}  {age:>{widths[1]}}  {size:>{widths[2]}}  {run}" for step, age, size, run in rows]
    return "\n".join(lines + [clear_line])


def _age(seconds: float) -> str:
    """``45 s``, ``12 min``, ``3 h``, ``2 d``: how long ago."""
    for unit, length in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= length:
            return f"{int(seconds // length)} {unit}"
    return f"{max(int(seconds), 0)} s"
