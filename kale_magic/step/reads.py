"""Which workspace files a step reads, recorded in the step's own process for its cache key.

A Python audit hook (:func:`sys.addaudithook`) hears every ``open`` — ``open()``,
``io.open``, ``os.open`` and the import system's ``io.open_code`` — and every
folder listing (``os.listdir`` and ``os.scandir``, which ``glob``, ``pathlib`` and
``os.walk`` use).  Paths inside the workspace (the step's working directory) are
kept, minus kale's own folder, version control and byte-code caches:

* a file opened for reading is an input, unless the step created or truncated it
  first (then it is an output); its (inode, size, mtime) is noted when it is first
  opened and again when the step ends, and a file that changed in between — the
  step rewrote what it read, or something else did — is reported as ``changed``,
  so the result is not cached;
* a listing is kept as the digest of the names it returned (:func:`listing_digest`),
  except listings made by the import system or by package scanners to find modules;
* a local module the step imported (its file in the workspace) is an input.

Audit hooks cannot be removed, so one hook per process serves whichever recorder
is active; with none active it costs a comparison per audited event.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading

# Never inputs, never part of a listing: kale's runs, version control, caches (as snapshots skip them).
SKIPPED = frozenset({".kale", ".git", ".hg", ".svn", ".ipynb_checkpoints", "__pycache__"})
MISSING = "missing"
# Modules whose listings look for modules or distributions on the import path, not for the step's data.
IMPORT_SYSTEM = ("importlib", "_frozen_importlib", "importlib_metadata", "pkg_resources", "pkgutil", "zipimport")
# Modules that list folders on behalf of their caller: the caller decides.
LISTING_HELPERS = frozenset({"os", "glob", "pathlib", "shutil", "fnmatch", "posixpath", "genericpath"})


def listing_digest(names) -> str:
    """What a folder listing returned, as one digest (the step side and the cache compute it alike)."""
    kept = sorted(name for name in names if name not in SKIPPED)
    return "listing:" + hashlib.sha256("\0".join(kept).encode()).hexdigest()[:32]


def _signature(path: str) -> tuple | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_ino, info.st_size, info.st_mtime_ns


class FileReads:
    """The workspace files one step reads: ``with FileReads(root) as reads: ...; reads.report()``."""

    _active: FileReads | None = None  # the recorder the process-wide hook feeds
    _hooked = False

    def __init__(self, root: str | os.PathLike):
        self.root = os.path.realpath(root)
        self.prefix = self.root.rstrip(os.sep) + os.sep
        self.inputs: dict[str, tuple | None] = {}  # path -> signature when first read (None: missing)
        self.outputs: set[str] = set()  # created or truncated before any read
        self.listings: dict[str, str] = {}  # folder -> listing digest when first listed
        self._modules: set[str] = set()
        self._local = threading.local()  # set while the hook itself lists a folder

    def __enter__(self) -> FileReads:
        self._modules = set(sys.modules.copy())
        if not FileReads._hooked:
            sys.addaudithook(FileReads._hook)
            FileReads._hooked = True
        FileReads._active = self
        return self

    def __exit__(self, *exc) -> None:
        FileReads._active = None

    @staticmethod
    def _hook(event: str, args: tuple) -> None:
        recorder = FileReads._active
        if recorder is None or event not in ("open", "os.listdir", "os.scandir"):
            return
        try:
            if event == "open":
                recorder._opened(*args[:3])
            else:
                recorder._listed(args[0])
        except Exception:  # noqa: BLE001 - recording must never break the step's own call
            pass

    # events ------------------------------------------------------------------------------
    def _relative(self, path) -> str | None:
        """The path inside the workspace, or None (outside it, or in a skipped folder)."""
        if isinstance(path, int):
            return None  # an already open descriptor
        if isinstance(path, str) and path[:1] == os.sep and not path.startswith(self.root) and "/." not in path:
            return None  # the common case (libraries, the import system), decided without normalizing
        path = os.fsdecode(os.fspath(path))
        if not os.path.isabs(path):
            path = os.path.join(os.getcwd(), path)
        path = os.path.normpath(path)
        if path == self.root:
            return ""
        if not path.startswith(self.prefix):
            return None
        rel = path[len(self.prefix):]
        if SKIPPED.intersection(rel.split(os.sep)):
            return None
        return rel.replace(os.sep, "/")

    def _opened(self, path, mode, flags) -> None:
        rel = self._relative(path)
        if rel is None or rel in self.inputs or rel in self.outputs or not isinstance(flags, int):
            return
        reads = flags & os.O_ACCMODE != os.O_WRONLY
        fresh = flags & os.O_TRUNC or (flags & os.O_CREAT and flags & os.O_EXCL)
        if reads and not fresh:
            self.inputs[rel] = _signature(os.path.join(self.root, rel))
        else:
            self.outputs.add(rel)

    def _listed(self, path) -> None:
        if getattr(self._local, "busy", False):
            return
        rel = self._relative("." if path is None else path)
        if rel is None or rel in self.listings or self._import_system(sys._getframe(2), rel):
            return
        self._local.busy = True
        try:
            self.listings[rel] = listing_digest(os.listdir(os.path.join(self.root, rel)))
        except OSError:
            self.listings[rel] = MISSING
        finally:
            self._local.busy = False

    def _import_system(self, frame, rel: str) -> bool:
        """Whether a listing was made to find modules rather than by (or for) the step's code.

        Helpers (glob, pathlib, os.walk ...) are passed over; the first other frame
        decides: the import system never counts; the step's own code (its cells,
        its local modules) always does; another library counts unless the folder is
        on the import path, which package scanners list for their own reasons.
        """
        while frame is not None:
            module = frame.f_globals.get("__name__") or ""
            if module.split(".")[0] not in LISTING_HELPERS:
                break
            frame = frame.f_back
        if frame is None:
            return False
        module = frame.f_globals.get("__name__") or ""
        if module.startswith(IMPORT_SYSTEM):
            return True
        if module == "__main__" or frame.f_code.co_filename.startswith(self.prefix):
            return False
        folder = os.path.normpath(os.path.join(self.root, rel))
        return any(os.path.normpath(os.path.abspath(p or ".")) == folder for p in sys.path)

    # the result --------------------------------------------------------------------------
    def report(self) -> dict:
        """``{"files": [...], "listings": {...}, "changed": [...]}`` for the step's outcome."""
        modules = sys.modules.copy()  # one C call: safe while other threads import
        for name in modules.keys() - self._modules:
            origin = getattr(modules[name], "__file__", None)
            rel = self._relative(origin) if origin else None
            if rel is not None and rel not in self.outputs:
                self.inputs.setdefault(rel, _signature(os.path.join(self.root, rel)))
        changed = sorted(rel for rel, seen in self.inputs.items()
                         if _signature(os.path.join(self.root, rel)) != seen)
        files = sorted(set(self.inputs) - set(changed))
        return {"files": files, "listings": dict(sorted(self.listings.items())), "changed": changed}
