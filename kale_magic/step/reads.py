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
* a local module the step imported (its file in the workspace) is an input;
* a file opened for writing without truncation (append, ``r+``, ``os.open``
  without ``O_TRUNC``) that exists is an input too: what it holds afterwards
  depends on what it held; only a file the step creates or truncates is an
  output only;
* ``os.open(..., dir_fd=fd)``, ``os.listdir(fd)`` and ``os.scandir(fd)`` are
  resolved through ``/proc/self/fd``.

Some reads are invisible to the audit hook: libraries whose readers open files
in native code (pyarrow, polars, h5py ...), subprocesses (``!cat``,
``subprocess``, process pools), descriptors that cannot be resolved.  Read hooks
(:mod:`.readhooks`) record the paths handed to the native readers they know; for
the rest the report lists why the reads are incomplete (``unseen``), and the
cache keys the step on the whole workspace, or on the files it declares with
``%%step --reads``.

Audit hooks cannot be removed, so one hook per process serves whichever recorder
is active; with none active it costs a comparison per audited event.  The same
holds for the few functions wrapped here (``os.open`` for its ``dir_fd``, process
starts of :mod:`multiprocessing`, the read hooks): wrapped once, they pass
through when no recorder is active.
"""

from __future__ import annotations

import glob
import hashlib
import os
import sys
import threading

from . import readhooks

# Never inputs, never part of a listing: kale's runs, version control, caches (as snapshots skip them).
SKIPPED = frozenset({".kale", ".git", ".hg", ".svn", ".ipynb_checkpoints", "__pycache__"})
MISSING = "missing"
# Modules whose listings look for modules or distributions on the import path, not for the step's data.
IMPORT_SYSTEM = ("importlib", "_frozen_importlib", "importlib_metadata", "pkg_resources", "pkgutil", "zipimport")
# Modules that list folders on behalf of their caller: the caller decides.
LISTING_HELPERS = frozenset({"os", "glob", "pathlib", "shutil", "fnmatch", "posixpath", "genericpath"})
# Audit events of starting another program or process: what it reads is out of sight.
PROCESS_EVENTS = frozenset({"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
                            "os.forkpty", "pty.spawn"})
AUDITED = frozenset({"open", "os.listdir", "os.scandir", "sqlite3.connect"}) | PROCESS_EVENTS


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
        self.unseen: dict[str, str] = {}  # kind -> why some reads are out of sight (the first of each kind)
        self._modules: set[str] = set()
        self._local = threading.local()  # busy: the hook itself lists a folder; dir_fd: of the os.open running

    @staticmethod
    def install() -> None:
        """Hook this process once (the warm worker does it before forking steps, so they start hooked)."""
        if not FileReads._hooked:
            sys.addaudithook(FileReads._hook)
            _wrap_os_open()
            _wrap_process_start()
            readhooks.registry.activate(_native_read)
            FileReads._hooked = True

    def __enter__(self) -> FileReads:
        self._modules = set(sys.modules.copy())
        FileReads.install()
        readhooks.registry.activate(_native_read)  # hooks registered since, on modules imported since
        FileReads._active = self
        return self

    def __exit__(self, *exc) -> None:
        FileReads._active = None

    @staticmethod
    def _hook(event: str, args: tuple) -> None:
        recorder = FileReads._active
        if recorder is None or event not in AUDITED:
            return
        try:
            if event == "open":
                recorder._opened(*args[:3])
            elif event in PROCESS_EVENTS:
                recorder.not_seen("process", f"it starts another process ({_program(event, args)}), whose reads "
                                             "are out of sight")
            elif event == "sqlite3.connect":
                recorder.read_natively(_sqlite_path(args[0]))
            else:
                recorder._listed(args[0])
        except Exception as exc:  # noqa: BLE001 - recording must never break the step's own call
            recorder.not_seen("error", f"a read could not be recorded ({event}: {type(exc).__name__}: {exc})")

    def not_seen(self, kind: str, why: str) -> None:
        """Some reads are out of sight: the step's key cannot rest on the files recorded."""
        self.unseen.setdefault(kind, why)

    def read_natively(self, path) -> None:
        """A path handed to a reader that opens it in native code: a file, a folder (all of it) or a glob."""
        if isinstance(path, (list, tuple)):
            for item in path:
                self.read_natively(item)
            return
        if not isinstance(path, (str, bytes, os.PathLike)):
            return  # a buffer or an open file: its opening was recorded, or it is not a file
        path = os.fsdecode(os.fspath(path))
        if path.startswith("file://"):
            path = path[len("file://"):]
        elif "://" in path:
            return  # another file system (s3://, hdfs://): not the workspace
        full = os.path.normpath(os.path.join(os.getcwd(), path))
        if os.path.isdir(full):
            self._read_tree(full)
        elif glob.has_magic(path) and not os.path.exists(full):
            self._read_glob(full)
        else:
            self._opened(full, "r", os.O_RDONLY)

    def _read_tree(self, folder: str) -> None:
        for where, dirs, files in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if d not in SKIPPED)
            self._list_now(where)
            for name in files:
                self._opened(os.path.join(where, name), "r", os.O_RDONLY)

    def _read_glob(self, pattern: str) -> None:
        """Every folder under the pattern's fixed part is listed (so an added match counts), every match read."""
        parts = pattern.split(os.sep)
        fixed = next(i for i, part in enumerate(parts) if glob.has_magic(part))
        folder = os.sep.join(parts[:fixed]) or os.sep
        for where, dirs, _ in os.walk(folder) if self._relative(folder) is not None else ():
            dirs[:] = [d for d in dirs if d not in SKIPPED]
            self._list_now(where)
        for match in glob.glob(pattern, recursive=True):
            self.read_natively(match)

    def _list_now(self, folder: str) -> None:
        rel = self._relative(folder)
        if rel is None or rel in self.listings:
            return
        self._record_listing(rel)

    def _record_listing(self, rel: str) -> None:
        """The digest of folder ``rel``'s names now (listing it is no read of the step's own)."""
        self._local.busy = True
        try:
            self.listings[rel] = listing_digest(os.listdir(os.path.join(self.root, rel)))
        except OSError:
            self.listings[rel] = MISSING
        finally:
            self._local.busy = False

    # events ------------------------------------------------------------------------------
    def _relative(self, path) -> str | None:
        """The path inside the workspace, or None (outside it, or in a skipped folder)."""
        if isinstance(path, int):
            return None  # an already open descriptor: its opening was recorded, or it is no file
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
        dir_fd = getattr(self._local, "dir_fd", None)
        if mode is None and dir_fd is not None:  # os.open(path, dir_fd=...): relative to that folder
            self._local.dir_fd = None
            path = os.path.join(_descriptor_path(dir_fd), os.fsdecode(path))
        rel = self._relative(path)
        if rel is None or rel in self.inputs or rel in self.outputs or not isinstance(flags, int):
            return
        signature = _signature(os.path.join(self.root, rel))
        fresh = flags & os.O_TRUNC or (flags & os.O_CREAT and flags & os.O_EXCL)
        reads = flags & os.O_ACCMODE != os.O_WRONLY
        if fresh or (signature is None and not reads):
            self.outputs.add(rel)  # created or truncated: what was there before does not matter
        else:
            self.inputs[rel] = signature  # read, or written into (append, r+): what was there matters

    def _listed(self, path) -> None:
        if getattr(self._local, "busy", False):
            return
        if isinstance(path, int):
            path = _descriptor_path(path)  # os.listdir(fd), os.scandir(fd)
        rel = self._relative("." if path is None else path)
        if rel is None or rel in self.listings or self._import_system(sys._getframe(2), rel):
            return
        self._record_listing(rel)

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
        unseen = [*self.unseen.values(), *readhooks.registry.unhooked(modules)]
        return {"files": files, "listings": dict(sorted(self.listings.items())), "changed": changed,
                "unseen": unseen}


def _native_read(path) -> None:
    """What the read hooks call with each path a native reader was given."""
    recorder = FileReads._active
    if recorder is not None:
        try:
            recorder.read_natively(path)
        except Exception as exc:  # noqa: BLE001 - never break the library's call
            recorder.not_seen("error", f"a native read could not be recorded ({type(exc).__name__}: {exc})")


def _sqlite_path(database):
    """The file behind ``sqlite3.connect``'s argument (a path or a ``file:`` URI); None for memory."""
    database = os.fsdecode(os.fspath(database))
    if database.startswith("file:"):
        database = database[len("file:"):].partition("?")[0]
    return None if database in ("", ":memory:") else database


def _descriptor_path(fd: int) -> str:
    """The path an open descriptor (a folder) stands for; OSError when the system does not say (no /proc)."""
    return os.readlink(f"/proc/self/fd/{fd}")


def _program(event: str, args: tuple) -> str:
    """'cat data.csv', 'a forked process' ... for the explanation of an unseen read."""
    if event == "subprocess.Popen":
        argv = args[1]
        text = argv if isinstance(argv, (str, bytes)) else " ".join(map(os.fsdecode, argv or ()))
    elif event == "os.system":
        text = args[0]
    elif event in ("os.exec", "os.posix_spawn", "os.spawn"):
        text = " ".join(map(os.fsdecode, args[1] or ()))
    else:
        return "a forked process"
    text = os.fsdecode(text)
    return repr(text if len(text) <= 60 else text[:57] + "...")


def _wrap_os_open() -> None:
    """``os.open`` tells the audit hook its path but not its ``dir_fd``: this wrapper does."""
    real = os.open

    def open(path, flags, mode=0o777, *, dir_fd=None):  # noqa: A001 - it stands in for os.open
        recorder = FileReads._active
        if dir_fd is None or recorder is None:
            return real(path, flags, mode, dir_fd=dir_fd)
        recorder._local.dir_fd = dir_fd
        try:
            return real(path, flags, mode, dir_fd=dir_fd)
        finally:
            recorder._local.dir_fd = None

    open.__wrapped__ = real
    os.open = open


def _wrap_process_start() -> None:
    """multiprocessing's spawn and forkserver start processes without an audit event: say so here."""
    import multiprocessing.process

    process = multiprocessing.process.BaseProcess
    real = process.start

    def start(self):
        recorder = FileReads._active
        if recorder is not None:
            recorder.not_seen("process", f"it starts another process ({type(self).__name__}), whose reads are "
                                         "out of sight")
        return real(self)

    process.start = start
