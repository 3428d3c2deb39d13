"""The contract every marshal backend fulfils, built-in or third-party.

A backend is chosen from the live value's type, so ``handles`` must be cheap
and must never import a heavy library: a value cannot be a ``pandas.DataFrame``
unless pandas is already in ``sys.modules``, and :func:`library` answers that
without importing anything.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

ARTIFACT_TYPES = ("Dataset", "Model", "Artifact")


class BackendDeclined(Exception):
    """Raised by ``Backend.save`` when this particular value is better served elsewhere.

    The framework clears the directory and tries the next backend that handles
    the value, down to dill.  Used e.g. by the pickle fast path when a container
    holds objects defined in the notebook, which only dill can send by value.
    """


class MissingLibrary(Exception):
    """A library a backend needs is not importable; the framework adds the variable and step."""

    def __init__(self, module: str, package: str):
        super().__init__(f"module '{module}' is not installed (pip install {package})")
        self.module = module
        self.package = package


def library(module: str):
    """The module if it is already imported, else None (never imports it)."""
    return sys.modules.get(module)


def type_name(obj) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


class Backend:
    """Base class for marshal backends.

    Subclasses set ``name`` (unique, stored in every record), ``version`` (bump
    it when the on-disk layout changes), ``artifact_type`` (the KFP artifact
    class of the values it saves) and ``priority`` (higher is tried first;
    built-in specialised backends use 100, the pickle fast path 10, dill 0).
    ``packages`` maps the modules it imports to the pip names that provide them,
    so a loading process without them gets the right ``pip install`` line.
    """

    name: str = ""
    version: str = "1"
    artifact_type: str = "Artifact"
    priority: int = 50
    packages: dict[str, str] = {}
    #: True when ``load`` reads every file through :func:`kale_magic.marshal.hashing.open_verified`
    #: or :func:`~kale_magic.marshal.hashing.map_verified`,
    #: so the framework need not hash the files in a separate pass first.
    verifies_while_reading: bool = False

    def handles(self, obj) -> bool:
        """Whether this backend can save ``obj``; cheap, never imports, never serializes."""
        raise NotImplementedError

    def size(self, obj) -> int | None:
        """Bytes the value occupies when that is known in O(1) (used at plan time), else None."""
        return None

    def save(self, obj, directory: Path) -> list[str]:
        """Write ``obj`` into the empty ``directory``; return the names of the files written."""
        raise NotImplementedError

    def load(self, directory: Path, record: dict):
        """Read the value saved by :meth:`save` (files already size-checked by the framework)."""
        raise NotImplementedError

    def require(self, module: str):
        """Import ``module`` for a save or load, turning its absence into :class:`MissingLibrary`."""
        try:
            return importlib.import_module(module)
        except ModuleNotFoundError as exc:
            top = module.split(".")[0]
            if exc.name is None or exc.name.split(".")[0] != top:
                raise
            raise MissingLibrary(module, self.packages.get(top, top)) from exc

    def __repr__(self):
        return f"<{type(self).__name__} {self.name!r} v{self.version} priority={self.priority}>"
