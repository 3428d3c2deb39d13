"""Kubeflow Pipelines as the registry knows it: chosen by a host, values loaded back from the object store."""

from __future__ import annotations

import os

from ..registry import EngineType


class KfpType(EngineType):
    name = "kfp"

    def settings_class(self):
        from .settings import Kfp

        return Kfp

    def chosen(self, args, settings) -> int:
        """--host and --upload-only mean KFP; so does a configured host (Kfp.host, KF_PIPELINES_ENDPOINT)."""
        if getattr(args, "host", None) or getattr(args, "upload_only", False):
            return 2
        return 1 if (settings or {}).get("host") or os.environ.get("KF_PIPELINES_ENDPOINT") else 0

    def create(self, request, workspace, *, settings, context):
        from .engine import KfpEngine

        config = dict(settings or {})
        config["rerun"] = request.no_cache
        config.setdefault("max_parallel", context.max_parallel)  # a --foreach loop's parallelism
        return KfpEngine(request.host, config=config)

    def load_value(self, run_dir, step: str, name: str) -> None:
        from .results import fetch  # from the KFP run's artifacts in the object store

        fetch(run_dir, step, name)

    def saved_items(self, run_dir, step: str) -> list[str] | None:
        from .results import saved_items  # where the run's end found each item's values in the object store

        return saved_items(run_dir, step)

    def interrupted(self, pid: int) -> str:
        return (f"the kernel following this run ended (pid {pid}); the run itself may go on in Kubeflow "
                "Pipelines: see its link")

    def schedules(self, args, settings, pipeline, action, name, store) -> str:
        from .schedules import manage

        return manage(args.host, settings or {}, pipeline, action, name, store=store)

    def record_scheduled(self, settings, pipeline: str, store) -> str:
        from .schedules import sync

        return sync(None, settings or {}, pipeline, store)

    def add_commands(self, subcommands, plan_file) -> None:
        from .cli import add_commands

        add_commands(subcommands, plan_file)
