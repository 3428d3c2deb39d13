"""Manifests: the record of one snapshot, ``manifests/<id>.json``, written last and atomically.

A manifest lists every file (path, size, mode, sha256), symlink and directory of the
workspace, what was left out and why, and the environment.  A snapshot exists
exactly when its manifest does, so an interrupted snapshot is never used.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .atomic import write_atomic
from .errors import SnapshotError
from ..files import human_size

FORMAT = 1
LARGEST = 5


@dataclass
class Snapshot:
    id: str
    manifest: Path
    created: str
    file_count: int
    total_bytes: int
    largest: list[tuple[str, int]]
    new_bytes: int = 0  # content this snapshot added to the store (the rest was already there)
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def from_manifest(cls, path: Path, data: dict, new_bytes: int = 0,
                      warnings: list[str] = ()) -> Snapshot:
        files = data["files"]
        largest = sorted(files, key=lambda f: (-f["size"], f["path"]))[:LARGEST]
        return cls(id=data["id"], manifest=path, created=data["created"],
                   file_count=len(files), total_bytes=sum(f["size"] for f in files),
                   largest=[(f["path"], f["size"]) for f in largest],
                   new_bytes=new_bytes, warnings=list(warnings))

    def summary(self) -> str:
        return (f"{self.id}: {self.file_count} files, {human_size(self.total_bytes)}"
                f" ({human_size(self.new_bytes)} new)")


def manifests_dir(store: Path) -> Path:
    return Path(store) / "manifests"


def write_manifest(store: Path, data: dict) -> Path:
    path = manifests_dir(store) / f"{data['id']}.json"
    write_atomic(path, json.dumps(data, indent=1, sort_keys=True).encode())
    return path


def resolve_id(store: Path, text: str) -> str:
    """An exact id, a unique prefix of one, or ``latest``."""
    ids = sorted(p.stem for p in manifests_dir(store).glob("*.json"))
    if text == "latest" and ids:
        return list_snapshots(store)[-1].id
    if text in ids:
        return text
    matches = [i for i in ids if i.startswith(text)]
    if len(matches) == 1:
        return matches[0]
    known = ", ".join(ids[-3:]) or "none yet"
    what = "is ambiguous" if matches else "does not exist"
    raise SnapshotError(f"snapshot '{text}' {what} in {store} (latest: {known}); "
                        "list them with %kale_snapshots or `kale-magic snapshot list`")


def read_manifest(store: Path, snapshot_id: str) -> dict:
    path = manifests_dir(store) / f"{resolve_id(store, snapshot_id)}.json"
    return json.loads(path.read_text())


def load_snapshot(store: Path, snapshot_id: str) -> Snapshot:
    """An existing snapshot by id (or unique prefix, or ``latest``)."""
    data = read_manifest(store, snapshot_id)
    return Snapshot.from_manifest(manifests_dir(store) / f"{data['id']}.json", data)


def list_snapshots(store: Path) -> list[Snapshot]:
    """All complete snapshots of a store, oldest first."""
    snapshots = []
    for path in sorted(manifests_dir(store).glob("*.json")):
        try:
            snapshots.append(Snapshot.from_manifest(path, json.loads(path.read_text())))
        except (ValueError, KeyError):  # cut short by a crash: not a usable snapshot
            continue
    return sorted(snapshots, key=lambda s: (s.created, s.id))


@dataclass
class SnapshotDiff:
    a: str
    b: str
    added: list[str]
    removed: list[str]
    changed: list[str]
    packages: dict[str, tuple[str | None, str | None]]
    python: tuple[str, str] | None

    def lines(self) -> list[str]:
        out = [f"+ {p}" for p in self.added] + [f"- {p}" for p in self.removed]
        out += [f"M {p}" for p in self.changed]
        if self.python:
            out.append(f"python {self.python[0]} -> {self.python[1]}")
        for name, (old, new) in sorted(self.packages.items()):
            out.append(f"package {name} {old or '(none)'} -> {new or '(none)'}")
        return out

    def __bool__(self) -> bool:
        return bool(self.lines())


def diff(store: Path, a: str, b: str) -> SnapshotDiff:
    """What changed from snapshot ``a`` to ``b``: files (by content and mode), Python, packages."""
    old, new = read_manifest(store, a), read_manifest(store, b)
    before, after = _entries(old), _entries(new)
    env_a, env_b = old["environment"], new["environment"]
    pkgs_a, pkgs_b = env_a.get("packages", {}), env_b.get("packages", {})
    return SnapshotDiff(
        a=old["id"], b=new["id"],
        added=sorted(after.keys() - before.keys()),
        removed=sorted(before.keys() - after.keys()),
        changed=sorted(p for p in before.keys() & after.keys() if before[p] != after[p]),
        packages={n: (pkgs_a.get(n), pkgs_b.get(n)) for n in pkgs_a.keys() | pkgs_b.keys()
                  if pkgs_a.get(n) != pkgs_b.get(n)},
        python=None if env_a.get("python") == env_b.get("python")
        else (env_a.get("python"), env_b.get("python")))


def _entries(manifest: dict) -> dict[str, tuple]:
    entries = {f["path"]: (f["sha256"], f["mode"]) for f in manifest["files"]}
    entries.update({s["path"]: ("->", s["target"]) for s in manifest["symlinks"]})
    return entries


def snapshot_table(store: Path, last: int = 20, root: Path | None = None) -> str:
    """``%kale_snapshots``: the newest snapshots of ``store``, one line each."""
    snapshots = list_snapshots(store)[-last:] if Path(store).exists() else []
    if not snapshots:
        return f"no snapshots yet in {store} (%kale_run takes one unless --no-snapshot)"
    lines = [f"{s.id}  {s.created[:19].replace('T', ' ')}  {s.file_count:>6} files  "
             f"{human_size(s.total_bytes):>10}" for s in snapshots]
    where = f" --root {root}" if root else ""
    return "\n".join(lines + [f"restore one: kale-magic snapshot{where} restore ID DIR"])
