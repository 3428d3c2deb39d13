"""Taking a snapshot: walk the workspace, store each file's content once, write the manifest.

The walk honours ``.gitignore``/``.kaleignore`` and never follows symlinks; a link
pointing inside the workspace is recorded as a (relative) link, one pointing
outside is left out and reported.  Contents go through the hash cache and the
object store; the manifest is written last, so a failure leaves no snapshot.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .environment import capture_environment
from .errors import SnapshotError
from .hashcache import HashCache
from .ignore import IgnoreRules
from .manifest import FORMAT, Snapshot, write_manifest
from .objects import ObjectStore
from ..files import human_size

DEFAULT_WARN_BYTES = 500 << 20
DEFAULT_MAX_BYTES = 5 << 30
_RETRIES = 3
_WORKERS = min(4, os.cpu_count() or 1)  # hashing releases the GIL; more threads only contend


@dataclass
class Scan:
    """What the walk found, before any content is read."""

    files: list[tuple[str, os.stat_result]] = field(default_factory=list)
    symlinks: list[dict] = field(default_factory=list)
    dirs: list[str] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)


def scan(root: Path, exclude: tuple[Path, ...] = ()) -> Scan:
    """List what a snapshot of ``root`` holds; reads metadata only, so size caps apply before any copying."""
    found, rules = Scan(), IgnoreRules()
    pending = [("", root)]
    while pending:
        rel_dir, abs_dir = pending.pop()
        rules.enter(rel_dir, abs_dir)
        try:
            entries = sorted(os.scandir(abs_dir), key=lambda e: e.name)
        except OSError as error:
            raise SnapshotError(f"cannot list the folder '{rel_dir or '.'}' ({error.strerror}); "
                                "fix its permissions or list it in .kaleignore") from None
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            try:
                _add_entry(found, rules, root, rel, entry, pending, exclude)
            except FileNotFoundError:  # deleted since the folder was listed
                continue
    found.files.sort()
    found.dirs.sort()
    return found


def _add_entry(found: Scan, rules: IgnoreRules, root: Path, rel: str, entry: os.DirEntry,
               pending: list, exclude: tuple[Path, ...]) -> None:
    if entry.is_symlink():
        if not rules.ignored(rel, False):
            _add_symlink(found, root, rel, Path(entry.path))
    elif entry.is_dir(follow_symlinks=False):
        if not rules.ignored(rel, True) and Path(entry.path) not in exclude:
            found.dirs.append(rel)
            pending.append((rel, Path(entry.path)))
    elif rules.ignored(rel, False):
        return
    elif entry.is_file(follow_symlinks=False):
        found.files.append((rel, entry.stat(follow_symlinks=False)))
    else:
        found.skipped.append({"path": rel, "reason": "not a regular file (pipe, socket or device)"})


def _add_symlink(found: Scan, root: Path, rel: str, path: Path) -> None:
    target = os.readlink(path)
    resolved = Path(os.path.realpath(path))
    if resolved != root and root not in resolved.parents:
        found.skipped.append({"path": rel, "reason": f"symlink to {target} outside the workspace, not followed"})
        return
    if os.path.isabs(target):  # keep it pointing into the copy, not the original
        target = os.path.relpath(resolved, path.parent)
    found.symlinks.append({"path": rel, "target": target})


def take_snapshot(root: Path, store: Path, *, notebook: Path | None = None,
                  cells: list[str] | None = None, warn_bytes: int | None = DEFAULT_WARN_BYTES,
                  max_bytes: int | None = DEFAULT_MAX_BYTES) -> Snapshot:
    """Freeze ``root`` (files) and this kernel's environment into ``store``."""
    root, store = Path(root).resolve(), Path(store).resolve()
    started = time.time_ns()
    found = scan(root, exclude=(store,))
    warnings = _check_size(root, found, warn_bytes, max_bytes)
    objects = ObjectStore(store / "objects")
    cache = HashCache(store / "hashcache.json", started)
    files, new_bytes = _ingest_all(root, found, objects, cache)
    warnings += [f"left out {s['path']}: {s['reason']}" for s in found.skipped]
    environment = capture_environment(cells)
    if notebook is not None:
        environment["notebook"] = _store_notebook(Path(notebook), root, objects)
    data = {"format": FORMAT, "root": str(root), "files": files, "symlinks": found.symlinks,
            "dirs": found.dirs, "skipped": found.skipped, "environment": environment}
    data["id"] = _snapshot_id(data, started)
    data["created"] = datetime.fromtimestamp(started / 1e9, timezone.utc).isoformat(timespec="microseconds")
    cache.save()
    path = write_manifest(store, data)
    return Snapshot.from_manifest(path, data, new_bytes, warnings)


def _check_size(root: Path, found: Scan, warn_bytes: int | None, max_bytes: int | None) -> list[str]:
    total = sum(info.st_size for _, info in found.files)
    largest = sorted(found.files, key=lambda f: -f[1].st_size)[:5]
    named = ", ".join(f"{rel} ({human_size(info.st_size)})" for rel, info in largest)
    if max_bytes is not None and total > max_bytes:
        raise SnapshotError(
            f"the workspace {root} holds {human_size(total)}, above the snapshot limit of "
            f"{human_size(max_bytes)}; largest files: {named}. List what the pipeline does not "
            f"need in .kaleignore, or raise the limit with --snapshot-max (e.g. "
            f"--snapshot-max {-(-total // (1 << 30))}G)")
    if warn_bytes is not None and total > warn_bytes:
        return [f"the snapshot holds {human_size(total)} (more than {human_size(warn_bytes)}); "
                f"largest files: {named}; list files the pipeline does not need in .kaleignore"]
    return []


def _ingest_all(root: Path, found: Scan, objects: ObjectStore, cache: HashCache) -> tuple[list[dict], int]:
    """Hash and store every file, a few at a time (copying and hashing release the GIL)."""
    def one(item):
        return _ingest(root, *item, objects, cache)

    with ThreadPoolExecutor(max_workers=_WORKERS) as pool:
        futures = [pool.submit(one, item) for item in found.files]
        try:
            results = [future.result() for future in futures]
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise
    files = []
    new_bytes = 0
    for (rel, _), result in zip(found.files, results, strict=True):
        if result is None:
            found.skipped.append({"path": rel, "reason": "deleted while the snapshot was taken"})
        else:
            files.append(result[0])
            new_bytes += result[1]
    return files, new_bytes


def _ingest(root: Path, rel: str, info: os.stat_result, objects: ObjectStore,
            cache: HashCache) -> tuple[dict, int] | None:
    """One file's manifest entry and the bytes it added; re-read if it changed while copied."""
    digest = cache.lookup(rel, info)
    if digest and objects.has(digest, info.st_size):
        cache.remember(rel, info, digest)
        return _entry(rel, info, digest), 0
    path = root / rel
    for _ in range(_RETRIES):
        try:
            digest, size, added = objects.ingest(path)
            after = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            return None
        except OSError as error:
            raise SnapshotError(f"cannot read '{rel}' ({error.strerror}); fix its permissions "
                                "or list it in .kaleignore") from None
        if _same(info, after) and size == after.st_size:
            cache.remember(rel, after, digest)
            return _entry(rel, after, digest), size if added else 0
        info = after
    raise SnapshotError(f"'{rel}' kept changing while it was snapshotted; wait until whatever "
                        "writes it has finished, or list it in .kaleignore")


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_ino, a.st_size, a.st_mtime_ns, a.st_ctime_ns) == (b.st_ino, b.st_size, b.st_mtime_ns, b.st_ctime_ns)


def _entry(rel: str, info: os.stat_result, digest: str) -> dict:
    return {"path": rel, "size": info.st_size, "mode": stat.S_IMODE(info.st_mode), "sha256": digest}


def _store_notebook(notebook: Path, root: Path, objects: ObjectStore) -> dict:
    notebook = notebook.resolve()
    try:
        digest, size, _ = objects.ingest(notebook)
    except OSError as error:
        raise SnapshotError(f"cannot read the notebook {notebook} ({error.strerror})") from None
    return {"path": notebook_path(notebook, root), "size": size, "sha256": digest}


def notebook_path(notebook: Path, root: Path) -> str:
    """How a manifest names the notebook: relative to the workspace when inside it."""
    notebook = notebook.resolve()
    return notebook.relative_to(root).as_posix() if root in notebook.parents else str(notebook)


def _snapshot_id(data: dict, started_ns: int) -> str:
    """Sortable by time, and naming the content: the same tree and environment hash alike."""
    content = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(started_ns / 1e9))
    return f"{stamp}-{hashlib.sha256(content).hexdigest()[:8]}"
