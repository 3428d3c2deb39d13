"""Read hooks: the paths a step hands to libraries that open files in native code.

The audit hook of :mod:`.reads` hears every open made through Python; a reader
written in C, C++ or Rust (pyarrow's Parquet reader, which ``pandas.read_parquet``
calls with the path itself) opens files where no audit event is raised.  A
:class:`ReadHook` wraps such a library's readers so that the paths they are given
are recorded as reads (a folder means all of it, a glob every folder it can match
in).  Hooks are installed on the modules already imported when a step starts and
on the others as they are imported.

A library known to read files natively (:data:`NATIVE_IO`) that a step has loaded
while no hook is registered for it makes the step's reads incomplete: the cache
then keys it on the whole workspace, or on what ``%%step --reads`` declares.

Third-party packages add hooks in the entry-point group ``kale_magic.read_hooks``
(a :class:`ReadHook`); one that fails to load is reported as a warning and its
library counts as unhooked.  The registry has the marshal registry's shape.
"""

from __future__ import annotations

import functools
import importlib.abc
import sys
from dataclasses import dataclass, field

from ..errors import KaleError

ENTRY_POINT_GROUP = "kale_magic.read_hooks"
# Libraries whose readers open files in native code; a loaded one without a hook means unseen reads.
NATIVE_IO = ("pyarrow", "polars", "duckdb", "h5py", "netCDF4", "tables", "tensorflow", "torch", "torchvision",
             "torchaudio", "cv2", "rasterio", "fiona", "pyogrio", "soundfile", "lmdb", "lance", "pyreadstat")
PATH_ARGUMENTS = ("source", "path", "paths", "path_or_paths", "where", "file", "filename", "f", "database")


@dataclass(frozen=True)
class ReadHook:
    """The native readers of library ``name``: ``readers`` maps a module to the names of its callables
    (``"read_table"``, ``"ParquetFile.__init__"``) whose first argument, or one named in ``arguments``,
    is a path (or a list of paths) that they read."""

    name: str
    readers: dict[str, tuple[str, ...]] = field(default_factory=dict)
    arguments: tuple[str, ...] = PATH_ARGUMENTS

    def install(self, module, record) -> None:
        for dotted in self.readers.get(module.__name__, ()):
            owner_name, _, attribute = dotted.rpartition(".")
            owner = getattr(module, owner_name) if owner_name else module
            function = getattr(owner, attribute, None)
            if function is None or getattr(function, "__kale_read_hook__", False):
                continue
            setattr(owner, attribute, self._recording(function, record, method=attribute == "__init__"))

    def _recording(self, function, record, method: bool):
        arguments = self.arguments

        @functools.wraps(function)
        def reader(*args, **kwargs):
            first = args[1:2] if method else args[:1]
            for value in (*first, *(kwargs[a] for a in arguments if a in kwargs)):
                record(value)
            return function(*args, **kwargs)

        reader.__kale_read_hook__ = True
        return reader


PYARROW = ReadHook("pyarrow", {
    "pyarrow": ("memory_map", "input_stream"),
    "pyarrow.parquet": ("read_table", "read_pandas", "read_metadata", "read_schema", "ParquetFile.__init__",
                        "ParquetDataset.__init__"),
    "pyarrow.dataset": ("dataset", "parquet_dataset"),
    "pyarrow.csv": ("read_csv", "open_csv"),
    "pyarrow.json": ("read_json",),
    "pyarrow.feather": ("read_table", "read_feather"),
    "pyarrow.orc": ("read_table", "ORCFile.__init__"),
    "pyarrow.ipc": ("open_file", "open_stream"),
})
TORCH = ReadHook("torch", {
    "torch": ("load", "from_file"),
    "torch.jit": ("load",),
    "torch.storage": ("UntypedStorage.from_file",),
})
BUILT_IN = (PYARROW, TORCH)


class ReadHookRegistry:
    """Read hooks by library name: built-ins, runtime registrations and entry points."""

    def __init__(self, hooks=BUILT_IN, group: str | None = ENTRY_POINT_GROUP):
        self._hooks: dict[str, ReadHook] = {}
        self.watched: set[str] = set()  # modules whose import installs hooks
        self._group = group
        self._loaded = group is None
        self.broken: dict[str, str] = {}  # entry-point name -> why it failed to load
        self._finder: _PostImport | None = None
        for hook in hooks:
            self.register(hook)

    def register(self, hook: ReadHook) -> ReadHook:
        """Add (or replace, by library name) a hook; a step started afterwards uses it."""
        if not isinstance(hook, ReadHook) or not hook.name:
            raise TypeError(f"a read hook must be a kale_magic.step.readhooks.ReadHook with a name, got {hook!r}")
        self._hooks[hook.name] = hook
        self.watched = {module for hook in self._hooks.values() for module in hook.readers}
        return hook

    def get(self, name: str) -> ReadHook:
        self._load_entry_points()
        try:
            return self._hooks[name]
        except KeyError:
            known = ", ".join(sorted(self._hooks)) or "none"
            why = f" (its entry point failed to load: {self.broken[name]})" if name in self.broken else ""
            raise KaleError(f"no read hook for '{name}'{why}; known read hooks: {known}") from None

    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted(self._hooks)

    def activate(self, record) -> None:
        """Make the hooks record into ``record(path)``: on loaded modules now, on the others when imported."""
        self._load_entry_points()
        if self._finder is None:
            self._finder = _PostImport(self)
            sys.meta_path.insert(0, self._finder)
        self._finder.record = record
        for module_name in self.watched:
            module = sys.modules.get(module_name)
            if module is not None:
                self._install(module)

    def unhooked(self, modules) -> list[str]:
        """Why reads are out of sight: each library of :data:`NATIVE_IO` among ``modules`` with no hook."""
        self._load_entry_points()
        return [f"it uses {name}, which reads files in native code that kale has no read hook for"
                for name in NATIVE_IO if name in modules and name not in self._hooks]

    def _install(self, module) -> None:
        record = self._finder.record
        for hook in self._hooks.values():
            if module.__name__ in hook.readers:
                try:
                    hook.install(module, record)
                except Exception as exc:  # noqa: BLE001 - a hook that does not fit this version
                    self._hooks.pop(hook.name, None)  # its library now counts as unhooked
                    self.watched = {m for h in self._hooks.values() for m in h.readers}
                    self.broken[hook.name] = f"{type(exc).__name__}: {exc}"
                    return

    def _load_entry_points(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        from ..plugins import load_entry_points

        load_entry_points(self._group, self.register, broken=self.broken, kind="read hook",
                          consequence="; its library counts as unhooked")


class _PostImport(importlib.abc.MetaPathFinder):
    """Installs the hooks of a watched module right after it is imported."""

    def __init__(self, registry: ReadHookRegistry):
        self.registry = registry
        self.record = None
        self._finding: set[str] = set()

    def find_spec(self, fullname, path, target=None):
        if fullname in self._finding or fullname not in self.registry.watched:
            return None
        self._finding.add(fullname)
        try:
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    break
            else:
                return None
        finally:
            self._finding.discard(fullname)
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _Installing(spec.loader, self.registry)
        return spec


class _Installing(importlib.abc.Loader):
    """A module's own loader, then its hooks."""

    def __init__(self, loader, registry: ReadHookRegistry):
        self._loader, self._registry = loader, registry

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        module.__spec__.loader = module.__loader__ = self._loader
        self._loader.exec_module(module)
        self._registry._install(module)

    def __getattr__(self, name):
        return getattr(self._loader, name)


registry = ReadHookRegistry()
