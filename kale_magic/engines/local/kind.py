"""The local engine as the registry knows it: the default, with the step cache and the kernel's warm worker."""

from __future__ import annotations

from ..registry import EngineType


class LocalType(EngineType):
    name = "local"
    default = True
    local = True

    def create(self, request, workspace, *, settings, context):
        from .engine import LocalEngine

        context.warm()
        return LocalEngine(context.workers, max_parallel=context.max_parallel,
                           cache=context.step_cache(request, workspace))
