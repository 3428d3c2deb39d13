"""Engines run a plan and report progress into a RunState.

``registry`` holds the engine types (:mod:`.registry`): the built-in ``local`` and
``kfp`` ones, those registered at runtime with :func:`register`, and those installed
in the entry-point group ``kale_magic.engines``.
"""

from .kfp.kind import KfpType
from .local.kind import LocalType
from .registry import ENTRY_POINT_GROUP, EngineRegistry, EngineType

registry = EngineRegistry()
registry.register(LocalType)
registry.register(KfpType)
register, get = registry.register, registry.get

__all__ = ["registry", "register", "get", "EngineType", "EngineRegistry", "ENTRY_POINT_GROUP"]
