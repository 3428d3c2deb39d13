"""The backend registry: built-ins, runtime registrations and entry points.

Third-party packages declare backends in the entry-point group
``kale_magic.marshal_backends`` (name = backend name, value = a ``Backend``
subclass or instance).  They are loaded on first use, not at import time, so
importing kale_magic stays cheap; a backend module must itself import its
heavy library lazily.
"""

from __future__ import annotations

import threading

from ..errors import MarshalError
from .base import ARTIFACT_TYPES, Backend

ENTRY_POINT_GROUP = "kale_magic.marshal_backends"


class BackendRegistry:
    """Backends by name, iterated by descending priority (ties: first registered first)."""

    def __init__(self, group: str | None = ENTRY_POINT_GROUP):
        self._backends: dict[str, tuple[int, int, Backend]] = {}
        self._group = group
        self._entry_points_loaded = group is None
        self._broken: dict[str, str] = {}  # entry-point name -> why it failed to load
        self._counter = 0
        self._loading = threading.RLock()  # steps may save from several threads at once
        self._entry_points_loading = False

    def register(self, backend, priority: int | None = None) -> Backend:
        """Add (or replace, by name) a backend class or instance; returns the instance."""
        if isinstance(backend, type):
            backend = backend()
        if not isinstance(backend, Backend):
            raise TypeError(f"a marshal backend must be a kale_magic.marshal.Backend, got {backend!r}")
        if not backend.name:
            raise TypeError(f"{type(backend).__qualname__} has no name")
        if backend.artifact_type not in ARTIFACT_TYPES:
            raise TypeError(f"backend '{backend.name}' has artifact_type {backend.artifact_type!r}, "
                            f"expected one of {', '.join(ARTIFACT_TYPES)}")
        if priority is not None:
            backend.priority = priority
        self._counter += 1
        self._backends[backend.name] = (-backend.priority, self._counter, backend)
        return backend

    def unregister(self, name: str) -> None:
        self._backends.pop(name, None)

    def get(self, name: str) -> Backend:
        self._load_entry_points()
        try:
            return self._backends[name][2]
        except KeyError:
            raise MarshalError(self._unknown(name)) from None

    def __contains__(self, name: str) -> bool:
        self._load_entry_points()
        return name in self._backends

    def __iter__(self):
        self._load_entry_points()
        return iter([entry[2] for entry in sorted(self._backends.values(), key=lambda e: e[:2])])

    def names(self) -> list[str]:
        return [backend.name for backend in self]

    def backend_for(self, obj) -> Backend:
        """The highest-priority backend whose ``handles`` accepts ``obj``."""
        for backend in self:
            if backend.handles(obj):
                return backend
        raise MarshalError(f"no marshal backend handles values of type {type(obj).__qualname__}")

    def candidates(self, obj):
        """Every backend that handles ``obj``, in the order they should be tried."""
        return [backend for backend in self if backend.handles(obj)]

    def _unknown(self, name: str) -> str:
        known = ", ".join(sorted(self._backends)) or "none"
        if name in self._broken:
            return f"marshal backend '{name}' failed to load ({self._broken[name]}); known backends: {known}"
        return f"no marshal backend named '{name}'; known backends: {known}"

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        with self._loading:  # other threads wait for a complete registry; a plug-in importing us does not
            if self._entry_points_loaded or self._entry_points_loading:
                return
            self._entry_points_loading = True
            try:
                self._register_entry_points()
            finally:
                self._entry_points_loaded = True

    def _register_entry_points(self) -> None:
        from ..plugins import load_entry_points

        load_entry_points(self._group, self.register, skip=self._backends, broken=self._broken,
                          kind="marshal backend")
