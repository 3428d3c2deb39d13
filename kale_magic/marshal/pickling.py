"""Pickle protocol 5 for builtins, dill for everything else (the last resort).

Objects defined in the notebook live in ``__main__``; plain pickle stores them
by reference (``__main__.Model``), which the next step cannot resolve.  The
fast path watches for them while pickling and declines, so dill, which sends
them by value, takes over.
"""

from __future__ import annotations

import pickle

from . import hashing
from .base import Backend, BackendDeclined

# Exact types (module, qualname) the fast path takes; subclasses go to dill.
_BUILTIN_TYPES = frozenset({
    ("builtins", name) for name in (
        "NoneType", "bool", "int", "float", "complex", "str", "bytes", "bytearray",
        "list", "tuple", "dict", "set", "frozenset", "range", "slice", "ellipsis",
    )
} | {
    ("datetime", "date"), ("datetime", "datetime"), ("datetime", "time"),
    ("datetime", "timedelta"), ("datetime", "timezone"),
    ("decimal", "Decimal"), ("fractions", "Fraction"), ("uuid", "UUID"),
    ("collections", "OrderedDict"), ("collections", "deque"), ("collections", "Counter"),
    ("collections", "defaultdict"),
    ("pathlib", "PurePosixPath"), ("pathlib", "PureWindowsPath"), ("pathlib", "PosixPath"),
    ("pathlib", "WindowsPath"),
})

PICKLE_FILE = "value.pkl"


class NotebookObject(Exception):
    """Pickling met an object defined in ``__main__``: only dill can send it."""


class MainGuard:
    """Pickler mixin that stops at the first object defined in ``__main__`` (classes, functions, instances)."""

    def reducer_override(self, obj):
        if getattr(obj, "__module__", None) == "__main__":
            raise NotebookObject(obj)
        return NotImplemented


class FastPickler(MainGuard, pickle.Pickler):
    """The C pickler, guarded."""


def _dump(pickler_class, obj, directory, filename=PICKLE_FILE, **options):
    with hashing.create(directory / filename) as f:
        pickler_class(f, protocol=5, **options).dump(obj)
    return [filename]


def dump_exact(obj, directory, stem) -> str:
    """Pickle ``obj`` as ``<stem>.pkl``, or with dill as ``<stem>.dill`` when it holds notebook objects.

    For backends whose preferred format cannot represent a value exactly: the
    fallback stays inside the backend, so the value keeps its artifact type.
    """
    try:
        return _dump(FastPickler, obj, directory, f"{stem}.pkl")[0]
    except (NotebookObject, pickle.PicklingError, TypeError, AttributeError):
        import dill

        (directory / f"{stem}.pkl").unlink()
        return _dump(dill.Pickler, obj, directory, f"{stem}.dill", recurse=True)[0]


def load_exact(directory, record, stem):
    """Load what :func:`dump_exact` wrote (the file name says which pickler was used)."""
    filename = f"{stem}.pkl" if f"{stem}.pkl" in record["files"] else f"{stem}.dill"
    if filename.endswith(".dill"):
        import dill as unpickler
    else:
        unpickler = pickle
    with hashing.open_verified(directory, record, filename) as f:
        value = unpickler.load(f)
        f.finish()
    return value


class PickleBackend(Backend):
    """Python builtins and containers of them, with pickle protocol 5."""

    name = "pickle"
    priority = 10
    verifies_while_reading = True

    def handles(self, obj):
        cls = type(obj)
        return (cls.__module__, cls.__qualname__) in _BUILTIN_TYPES

    def size(self, obj):
        return len(obj) if isinstance(obj, (bytes, bytearray)) else None

    def save(self, obj, directory):
        try:
            return _dump(FastPickler, obj, directory)
        except (NotebookObject, pickle.PicklingError, TypeError, AttributeError) as exc:
            raise BackendDeclined(str(exc)) from exc

    def load(self, directory, record):
        with hashing.open_verified(directory, record, PICKLE_FILE) as f:
            value = pickle.load(f)
            f.finish()
        return value


class DillBackend(Backend):
    """Anything dill can serialize: functions, lambdas and classes defined in the notebook.

    ``recurse=True`` stores only the globals a function actually uses, so a
    notebook function does not drag the whole user namespace along.
    """

    name = "dill"
    priority = 0
    packages = {"dill": "dill"}
    verifies_while_reading = True

    def handles(self, obj):
        return True

    def save(self, obj, directory):
        dill = self.require("dill")
        return _dump(dill.Pickler, obj, directory, recurse=True)

    def load(self, directory, record):
        dill = self.require("dill")
        with hashing.open_verified(directory, record, PICKLE_FILE) as f:
            value = dill.load(f)
            f.finish()
        return value
