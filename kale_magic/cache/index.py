"""The cache index on disk, and clearing it.

Layout (under ``.kale/``)::

    cache/entries/<key>.json   one per successful step execution: the step's key parts,
                               its outputs' checksums, its metrics, the runs holding the files
    cache/runs/<run-id>.json   one per run: pipeline, status, each step's status and key
    runs/<run-id>/data/...     the values themselves (the cache only points at them)

Every file is written whole to a temporary sibling and renamed, so concurrent
readers never see half an entry; plain JSON keeps the index readable by hand.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path


ENTRY_FIELDS = frozenset({"key", "pipeline", "step", "run_id", "locations", "parts", "outputs", "metrics"})


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class CacheIndex:
    """Entries by key and run records by id, under ``<kale_dir>/cache``."""

    def __init__(self, kale_dir: Path):
        self.kale_dir = Path(kale_dir)
        self.root = self.kale_dir / "cache"

    # entries --------------------------------------------------------------------------------
    def entry(self, key: str) -> dict | None:
        """The entry for ``key``; a damaged one counts as absent (the step then simply runs)."""
        entry = _read_json(self.root / "entries" / f"{key}.json")
        if entry is None or not ENTRY_FIELDS <= entry.keys() or entry["key"] != key:
            return None
        return entry

    def put(self, entry: dict) -> None:
        _write_json(self.root / "entries" / f"{entry['key']}.json", entry)

    def entries(self) -> list[dict]:
        folder = self.root / "entries"
        found = (_read_json(p) for p in folder.glob("*.json")) if folder.is_dir() else ()
        return [e for e in found if e is not None]

    def latest(self, pipeline: str, step: str) -> dict | None:
        """The most recent entry of this step, to explain what changed since."""
        mine = [e for e in self.entries() if e.get("pipeline") == pipeline and e.get("step") == step]
        return max(mine, key=lambda e: e.get("created", 0), default=None)

    def value_dir(self, run_id: str, step: str, name: str) -> Path:
        return self.kale_dir / "runs" / run_id / "data" / step / name

    # run records ----------------------------------------------------------------------------
    def run(self, run_id: str) -> dict | None:
        return _read_json(self.root / "runs" / f"{run_id}.json")

    def put_run(self, run_id: str, record: dict) -> None:
        _write_json(self.root / "runs" / f"{run_id}.json", record)

    def last_failed(self, pipeline: str) -> str | None:
        folder = self.root / "runs"
        records = [(p.stem, _read_json(p)) for p in folder.glob("*.json")] if folder.is_dir() else []
        failed = [(r.get("ended", 0), run_id) for run_id, r in records
                  if r and r.get("pipeline") == pipeline and r.get("status") == "failed"]
        return max(failed)[1] if failed else None


# clearing ---------------------------------------------------------------------------------

@dataclass
class Cleared:
    entries: int
    runs: int
    freed: int  # bytes actually released (values hard-linked into kept runs stay)

    def __str__(self) -> str:
        from ..plan.report import human_size

        return (f"kale: removed {self.entries} cache entries and the saved values of {self.runs} runs, "
                f"freed {human_size(self.freed)} (run history, logs and executed notebooks are kept)")


def clear(root, older_than: float | None = None) -> Cleared:
    """Forget cached step results and delete the saved values of runs, to free disk.

    ``root`` is the folder holding ``.kale`` (or ``.kale`` itself).  With
    ``older_than`` (days), only entries not used and runs not written for that
    long go.  Run records, logs and executed notebooks stay, so history is kept.
    The public entry point of ``%kale_cache --clear`` and ``kale-magic cache clear``.
    """
    root = Path(root)
    index = CacheIndex(root if root.name == ".kale" else root / ".kale")
    cutoff = time.time() - older_than * 86400 if older_than is not None else None

    def old(stamp: float) -> bool:
        return cutoff is None or stamp < cutoff

    runs, freed = 0, 0
    for data in sorted((index.kale_dir / "runs").glob("*/data")):
        if old(data.stat().st_mtime):
            freed += _remove_tree(data)
            runs += 1
    removed = 0
    for entry in index.entries():
        alive = [r for r in entry.get("locations", ()) if (index.kale_dir / "runs" / r / "data").is_dir()]
        if old(entry.get("used", 0)) or not alive:
            (index.root / "entries" / f"{entry['key']}.json").unlink(missing_ok=True)
            removed += 1
    return Cleared(removed, runs, freed)


def _remove_tree(folder: Path) -> int:
    """Delete a tree file by file; count the bytes of files whose last link goes."""
    freed = 0
    for dirpath, _, filenames in os.walk(folder):
        for filename in filenames:
            path = os.path.join(dirpath, filename)
            info = os.lstat(path)
            os.unlink(path)
            if info.st_nlink == 1:
                freed += info.st_size
    shutil.rmtree(folder, ignore_errors=True)
    return freed
