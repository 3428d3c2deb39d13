"""The workspace files a step can see, as one part of its cache key.

When ``%kale_run`` takes a snapshot, local steps work in a copy of it, so the files
they may read are exactly the snapshot's: its content (paths, SHA-256 and modes,
without the notebook file itself, which changes on every save) is a key part.
Previews (``--cache-only-check``, ``%kale_show``) take no snapshot; they walk the
workspace the same way and reuse the snapshot's remembered hashes, so unchanged
files are not read.
"""

from __future__ import annotations

import hashlib
import json
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from ..files import sha256_file


@dataclass(frozen=True)
class WorkspaceView:
    fingerprint: str
    files: dict[str, str]  # path -> sha256, to name what changed
    snapshot_id: str | None = None  # the snapshot the steps work in (None for a preview)
    notebook: str | None = None  # the notebook's path, left out


def _notebook_path(root: Path, notebook: Path | None) -> str | None:
    if notebook is None:
        return None
    try:
        return Path(notebook).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return None


def _view(files: dict[str, tuple[str, int]], symlinks: list[dict], snapshot_id: str | None,
          notebook: str | None) -> WorkspaceView:
    text = json.dumps([sorted(files.items()), sorted((s["path"], s["target"]) for s in symlinks)])
    return WorkspaceView(hashlib.sha256(text.encode()).hexdigest()[:16],
                         {path: digest for path, (digest, _) in files.items()}, snapshot_id, notebook)


def from_manifest(manifest: dict, root: Path, notebook: Path | None) -> WorkspaceView:
    """The view of a snapshot that was taken (or reused with ``--from-snapshot``)."""
    skip = _notebook_path(root, notebook)
    files = {f["path"]: (f["sha256"], f["mode"]) for f in manifest.get("files", ()) if f["path"] != skip}
    return _view(files, manifest.get("symlinks", []), manifest.get("id"), skip)


def current(root: Path, store: Path, notebook: Path | None) -> WorkspaceView:
    """The view a snapshot taken now would give, without storing anything."""
    from ..snapshot.hashcache import HashCache
    from ..snapshot.workspace import scan

    root, store = Path(root).resolve(), Path(store).resolve()
    skip = _notebook_path(root, notebook)
    remembered = HashCache(store / "hashcache.json", time.time_ns())
    found = scan(root, exclude=(store,))
    files = {}
    for rel, info in found.files:
        if rel == skip:
            continue
        digest = remembered.lookup(rel, info) or _sha256(root / rel)
        if digest is not None:
            files[rel] = (digest, stat.S_IMODE(info.st_mode))
    return _view(files, found.symlinks, None, skip)


def _sha256(path: Path) -> str | None:
    try:
        return sha256_file(path)
    except OSError:  # vanished or unreadable: the snapshot would leave it out too
        return None


def snapshot_files(store: Path, snapshot_id: str | None) -> dict[str, str] | None:
    """path -> sha256 of an earlier snapshot (notebook included), if it is still kept."""
    if not snapshot_id:
        return None
    from ..snapshot.errors import SnapshotError
    from ..snapshot.manifest import read_manifest

    try:
        manifest = read_manifest(Path(store), snapshot_id)
    except (SnapshotError, OSError, ValueError):
        return None
    return {f["path"]: f["sha256"] for f in manifest.get("files", ())}


def changed_files(old: dict[str, str], view: WorkspaceView, limit: int = 3) -> str:
    """'data.csv, utils.py and 2 more' — the files whose content differs from an earlier snapshot's."""
    new = view.files
    changed = sorted(p for p in set(old) | set(new) if old.get(p) != new.get(p) and p != view.notebook)
    shown = ", ".join(changed[:limit])
    return shown + (f" and {len(changed) - limit} more" if len(changed) > limit else "")


def preview(root: Path, store: Path, notebook: Path | None, request) -> WorkspaceView | None:
    """What a run of ``request`` would let its steps see: None with ``--no-snapshot``."""
    if request.from_snapshot:
        from ..snapshot.manifest import read_manifest

        return from_manifest(read_manifest(store, request.from_snapshot), root, notebook)
    return None if request.no_snapshot else current(root, store, notebook)
