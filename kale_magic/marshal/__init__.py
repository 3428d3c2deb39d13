"""Moving values between steps: an extensible registry of marshal backends.

``save(obj, path)`` writes a directory holding the data and a ``kale.json``
record; ``load(path)`` reads it back through the backend named in the record,
checking sizes and checksums before the value is returned (large arrays and
tables come back as copy-on-write mappings of the saved files, not copies);
``describe(obj)`` names the backend and KFP artifact type a value will get,
without serializing it (plan time).

Backends are tried by descending priority, the first whose ``handles`` accepts
the value wins (a backend may still decline a particular value at save time);
dill is the last resort.  Third-party backends come from the entry-point group
``kale_magic.marshal_backends`` or from :func:`register`.

Importing this package imports no heavy library: each backend imports its
library only when such a value is saved or loaded.
"""

from __future__ import annotations

from . import store
from .base import ARTIFACT_TYPES, Backend, BackendDeclined, MissingLibrary, library
from .boosters import LightGBMBackend, XGBoostBackend
from .hashing import create, map_verified, open_verified
from .numpy_backend import NumpyBackend
from .pandas_backend import PandasBackend
from .pickling import DillBackend, PickleBackend
from .registry import ENTRY_POINT_GROUP, BackendRegistry
from .sklearn_backend import SklearnBackend
from .torch_backend import TorchModelBackend, TorchTensorBackend

#: In priority order: specialised backends (100), then the pickle fast path (10), then dill (0).
BUILTIN_BACKENDS = (NumpyBackend, PandasBackend, SklearnBackend, TorchTensorBackend, TorchModelBackend,
                    XGBoostBackend, LightGBMBackend, PickleBackend, DillBackend)


def default_registry() -> BackendRegistry:
    """A registry with the built-in backends; entry points load on first use."""
    new = BackendRegistry(ENTRY_POINT_GROUP)
    for backend in BUILTIN_BACKENDS:
        new.register(backend)
    return new


registry = default_registry()


def register(backend, priority: int | None = None) -> Backend:
    """Register a backend (class or instance) in the default registry, replacing one of the same name."""
    return registry.register(backend, priority)


def save(obj, path, name: str | None = None, *, durable: bool = True, prefer: str | None = None) -> dict:
    """Atomically write ``obj`` as a directory at ``path``; returns its record (also in ``kale.json``).

    ``durable=False`` skips the fsyncs.  A durable save starts writing each
    file back to disk while it is still being written, so its wait at the end
    is short; without it the disk is not waited for at all.  Readers still never
    see a partial value; only a machine crash right after the save could leave a
    damaged one, which ``load`` reports by its checksum rather than returning
    wrong data.

    ``prefer`` names the backend to try first (a step's plan chose it from the kernel's value, and its KFP
    artifact type follows it); when it is unknown here or does not handle ``obj``, the usual order decides.
    """
    return store.save(registry, obj, path, name, durable, prefer)


def load(path, name: str | None = None, step: str | None = None):
    """Load the value saved at ``path``; ``name``/``step`` only make error messages precise."""
    return store.load(registry, path, name, step)


def describe(obj) -> tuple[str, str, str, int | None]:
    """(backend name, type name, KFP artifact type, size in bytes or None), without serializing."""
    return store.describe(registry, obj)


__all__ = [
    "ARTIFACT_TYPES", "Backend", "BackendDeclined", "BackendRegistry", "ENTRY_POINT_GROUP", "MissingLibrary",
    "create", "default_registry", "describe", "library", "load", "map_verified", "open_verified", "register",
    "registry", "save",
]
