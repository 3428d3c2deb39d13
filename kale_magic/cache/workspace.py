"""What a step finds in the workspace, as the digests its cache entries compare.

A cache entry lists the workspace files its step read and the folders it listed
(recorded while it ran, :mod:`kale_magic.step.reads`), each with a digest of what
was there.  Before the step runs again, exactly those paths are looked up where
the step would find them now, and the entry is reused only if every digest is the
same: editing another notebook or a scratch file changes nothing a step read.

Where a step would find them, one class each:

* :class:`SnapshotFiles` — a snapshot: the copy a run's steps work in, or (for a
  preview of ``--from-snapshot``) the manifest alone.  A file still linked to the
  snapshot's content has the manifest's name for it, so nothing is read; a file an
  earlier step wrote is hashed.
* :class:`ScanFiles` — the snapshot a run would take now (``--cache-only-check``,
  ``%kale_show``): the workspace walked as a snapshot walks it, hashes from the
  snapshot's hash cache, so unchanged files are not read.
* :class:`LiveFiles` — the notebook's folder as it is (``--no-snapshot``), hashes
  remembered by (inode, size, mtime, ctime) in ``.kale/cache/hashes.json``.

A file's digest is the name the snapshot store gives its content, so a result
computed in a snapshot is reused in place and the other way round.

A step whose reads were partly out of sight (:mod:`kale_magic.step.reads`) is
keyed on more: the whole workspace as the run found it (:meth:`WorkspaceFiles.whole`),
or the files matching the globs it declares with ``%%step --reads``
(:meth:`WorkspaceFiles.declared`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import time
from collections import defaultdict
from functools import lru_cache
from pathlib import Path

from ..files import file_digest
from ..layout import KaleDir
from ..step.reads import MISSING, SKIPPED, listing_digest

FOLDER = "folder"
SHOWN = 3  # files named in a reason before "and N more"


def content_name(entry: dict) -> str:
    """A manifest entry's content name (its hash): a file's digest wherever it is found."""
    from ..snapshot.manifest import object_name

    return object_name(entry)


def hash_file(path: Path) -> str:
    """The name the snapshot store gives a file's content (xxh3-128)."""
    return file_digest(path)[1]


@lru_cache(maxsize=256)
def _glob_pattern(glob: str) -> re.Pattern:
    """``--reads`` globs: ``*`` and ``?`` within a name, ``**`` across folders; a folder means all in it."""
    out = []
    for piece in re.split(r"(\*\*/?|\*|\?|\[[^]]*\])", glob.strip("/")):
        if piece.startswith("**"):
            out.append("(?:.*/)?" if piece.endswith("/") else ".*")
        elif piece == "*":
            out.append("[^/]*")
        elif piece == "?":
            out.append("[^/]")
        elif piece.startswith("[") and len(piece) > 2:
            out.append("[^" + piece[2:] if piece[1] == "!" else piece)
        else:
            out.append(re.escape(piece))
    return re.compile("".join(out) + "(?:/.*)?")


def glob_matches(glob: str, rel: str) -> bool:
    return _glob_pattern(glob).fullmatch(rel) is not None


def _tree_digest(tree: dict[str, str]) -> str:
    return "tree:" + hashlib.sha256(json.dumps(tree, sort_keys=True).encode()).hexdigest()[:32]


class WorkspaceFiles:
    """Digests of paths as a step would find them; what differs from a cache entry, in words."""

    _tree: dict[str, str] | None = None

    def file(self, rel: str) -> str:
        raise NotImplementedError

    def listing(self, rel: str) -> str:
        raise NotImplementedError

    def _find_tree(self) -> dict[str, str]:
        raise NotImplementedError

    def tree(self) -> dict[str, str]:
        """Every file of the workspace as the run found it (path -> content name; a link -> 'link:TARGET')."""
        if self._tree is None:
            self._tree = self._find_tree()
        return self._tree

    def whole(self) -> str:
        """The digest of the whole workspace: the key of a step whose reads were partly out of sight."""
        return _tree_digest(self.tree())

    def declared(self, glob: str) -> str:
        """The digest of the files matching a ``%%step --reads`` glob (added or removed ones count)."""
        return _tree_digest({rel: name for rel, name in self.tree().items() if glob_matches(glob, rel)})

    def matches(self, entry: dict) -> bool:
        return (all(self.file(rel) == seen for rel, seen in entry.get("files", {}).items())
                and all(self.listing(rel) == seen for rel, seen in entry.get("listings", {}).items())
                and all(self.declared(glob) == seen for glob, seen in entry.get("declared", {}).items())
                and ("workspace" not in entry or self.whole() == entry["workspace"]))

    def differences(self, entry: dict) -> list[str]:
        """The paths the entry saw otherwise: ['data.csv', 'helper.py (gone)', 'inbox/ (files added or removed)']."""
        names = []
        for rel, seen in entry.get("files", {}).items():
            now = self.file(rel)
            if now != seen:
                names.append(rel + (" (gone)" if now == MISSING else " (new)" if seen == MISSING else ""))
        for rel, seen in entry.get("listings", {}).items():
            if self.listing(rel) != seen:
                names.append(f"{rel or '.'}/ (files added or removed)")
        for glob, seen in entry.get("declared", {}).items():
            if self.declared(glob) != seen:
                names.append(f"{glob} (declared with --reads)")
        if "workspace" in entry and self.whole() != entry["workspace"]:
            names.append(f"the workspace (the step is keyed on all of it: {entry.get('unseen', 'reads out of sight')})")
        return sorted(names)

    def changes(self, entry: dict) -> str:
        """'workspace files changed: data.csv, helper.py (gone)' — or '' when all is as the entry saw it."""
        names = self.differences(entry)
        if not names:
            return ""
        more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
        return "workspace files changed: " + ", ".join(names[:SHOWN]) + more

    def done(self) -> None:
        """Keep what was learnt (remembered hashes); called when a run or preview ends."""


class _OnDisk(WorkspaceFiles):
    """Paths under a real folder; hashes kept per (path, inode, size, mtime) while this object lives."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self._hashed: dict[tuple, str] = {}

    def _stat(self, rel: str) -> os.stat_result | None:
        try:
            return os.stat(self.root / rel)
        except OSError:
            return None

    def _hash(self, rel: str, info: os.stat_result) -> str:
        signature = (rel, info.st_ino, info.st_size, info.st_mtime_ns)
        if signature not in self._hashed:
            try:
                self._hashed[signature] = hash_file(self.root / rel)
            except OSError:
                return MISSING
        return self._hashed[signature]

    def file(self, rel: str) -> str:
        info = self._stat(rel)
        if info is None:
            return MISSING
        return FOLDER if stat.S_ISDIR(info.st_mode) else self._hash(rel, info)

    def listing(self, rel: str) -> str:
        try:
            return listing_digest(os.listdir(self.root / rel))
        except OSError:
            return MISSING

    def _find_tree(self) -> dict[str, str]:
        """Every file under the folder, skipping kale's, version control's and caches' folders."""
        tree = {}
        for where, dirs, files in os.walk(self.root):
            folder = Path(where).relative_to(self.root).as_posix()
            links = [d for d in dirs if os.path.islink(os.path.join(where, d))]
            dirs[:] = [d for d in dirs if d not in SKIPPED and d not in links]
            for name in (*files, *links):
                rel = name if folder == "." else f"{folder}/{name}"
                path = self.root / rel
                tree[rel] = f"link:{os.readlink(path)}" if path.is_symlink() else self.file(rel)
        return tree


class LiveFiles(_OnDisk):
    """The notebook's folder itself: steps read files in place (``--no-snapshot``)."""

    def __init__(self, root: str | os.PathLike, kale: KaleDir):
        super().__init__(root)
        from ..snapshot.hashcache import HashCache

        self._remembered = HashCache(kale.cache_hashes, time.time_ns())
        self._learnt = False

    def _hash(self, rel: str, info: os.stat_result) -> str:
        known = self._remembered.lookup(rel, info)
        if known is None:
            known = super()._hash(rel, info)
            self._learnt |= known != MISSING
        if known != MISSING:
            self._remembered.remember(rel, info, known)
        return known

    def done(self) -> None:
        if self._learnt:
            try:
                self._remembered.save()
            except OSError:  # only a memo: the next run hashes again
                pass


class SnapshotFiles(_OnDisk):
    """A snapshot's files: in the folder a run's steps work in, or from its manifest alone."""

    def __init__(self, manifest: dict, store: Path, workdir: str | os.PathLike | None = None):
        super().__init__(workdir or ".")
        from ..snapshot.objects import ObjectStore

        self.workdir = workdir
        self.names = {f["path"]: content_name(f) for f in manifest.get("files", ())}
        self.links = {s["path"]: f"link:{s['target']}" for s in manifest.get("symlinks", ())}
        self.objects = ObjectStore(Path(store) / "objects")
        self.children = _children([*self.names, *(s["path"] for s in manifest.get("symlinks", ())),
                                   *manifest.get("dirs", ())])

    def file(self, rel: str) -> str:
        name = self.names.get(rel)
        if self.workdir is None:
            return name or (FOLDER if rel in self.children else MISSING)
        info = self._stat(rel)
        if info is None:
            return MISSING
        if name is not None:
            try:
                if os.path.samestat(info, os.stat(self.objects.path(name))):
                    return name  # still the snapshot's content: no need to read it
            except OSError:
                pass
        return FOLDER if stat.S_ISDIR(info.st_mode) else self._hash(rel, info)

    def listing(self, rel: str) -> str:
        if self.workdir is not None:
            return super().listing(rel)
        return listing_digest(self.children[rel]) if rel in self.children else MISSING

    def _find_tree(self) -> dict[str, str]:
        """The snapshot as taken, before any step wrote into its copy."""
        return {**self.names, **self.links}


class ScanFiles(WorkspaceFiles):
    """What a snapshot taken now would hold, without storing one."""

    def __init__(self, root: Path, store: Path):
        self.root, self.store = Path(root).resolve(), Path(store).resolve()
        self._found = None

    def _scan(self):
        if self._found is None:
            from ..snapshot.hashcache import HashCache
            from ..snapshot.workspace import scan

            found = scan(self.root, exclude=(self.store,))
            self._remembered = HashCache(self.store / "hashcache.json", time.time_ns())
            self._files = dict(found.files)
            self._links = {s["path"]: f"link:{s['target']}" for s in found.symlinks}
            self._children = _children([*self._files, *self._links, *found.dirs])
            self._found = found
        return self._found

    def file(self, rel: str) -> str:
        self._scan()
        info = self._files.get(rel)
        if info is None and rel in self._links and (self.root / rel).is_file():
            info = os.stat(self.root / rel)  # a link inside the workspace: the file it points to
        if info is None:
            return FOLDER if rel in self._children else MISSING
        known = self._remembered.lookup(rel, info)
        if known is None:
            try:
                known = hash_file(self.root / rel)
            except OSError:
                return MISSING
        return known

    def listing(self, rel: str) -> str:
        self._scan()
        return listing_digest(self._children[rel]) if rel in self._children else MISSING

    def _find_tree(self) -> dict[str, str]:
        self._scan()
        return {**{rel: self.file(rel) for rel in self._files}, **self._links}


def _children(paths) -> dict[str, set[str]]:
    """folder -> the names in it, for every folder on the way to one of ``paths`` (the root is '')."""
    children: dict[str, set[str]] = defaultdict(set)
    for path in paths:
        while path:
            parent, _, name = path.rpartition("/")
            children[parent].add(name)
            path = parent
    return dict(children)


def preview(kale: KaleDir, root: Path, request) -> WorkspaceFiles:
    """Where the steps of a run of ``request`` would find their files, as a run would see them."""
    if request.from_snapshot:
        from ..snapshot.manifest import read_manifest

        return SnapshotFiles(read_manifest(kale.snapshots, request.from_snapshot), kale.snapshots)
    if request.no_snapshot:
        return LiveFiles(root, kale)
    return ScanFiles(root, kale.snapshots)
