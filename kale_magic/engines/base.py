"""The contract between ``%kale_run``'s tasks and the engines that run a plan.

``kale_magic.run.launch`` drives every engine the same way and never looks inside one::

    engine.prepare(snapshot, run_dir, will_run)   # Snapshot task: where steps find the workspace
    compiled = engine.compile(plan, run_dir)      # Compile task
    uploaded = engine.upload(plan, state, compiled)   # Upload task (None: nothing to upload)
    outcome = engine.run(plan, state, run_dir, compiled)  # Run task
    engine.cancel()                               # from another thread, at any time

Engines report step progress into the run's state; the run itself (its tasks and
its end) belongs to ``start_run``.  A configuration or server problem is raised as an
:class:`~kale_magic.errors.EngineError`, whose sentence the task shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol

if TYPE_CHECKING:
    from ..layout import RunDir
    from ..plan import Plan
    from ..run.state import RunState


@dataclass(frozen=True)
class SnapshotRef:
    """The workspace snapshot a run was given (taken now or named with ``--from-snapshot``)."""

    id: str
    store: Path  # the snapshot store (``.kale/snapshots``)
    manifest: Path
    root: Path  # the folder it was taken from
    notebook: Path | None = None


@dataclass(frozen=True)
class EngineContext:
    """What a kernel shares with the engines it creates (see ``EngineType.create``)."""

    workers: object = None  # the warm worker server (local engine), started on first use
    max_parallel: int = 8
    step_cache: Callable = lambda request, workspace: None  # the step cache of a run, or None
    warm: Callable[[], None] = lambda: None  # have the warm worker import what the steps will


@dataclass(frozen=True)
class Compiled:
    """What the Compile task produced."""

    notebooks: dict[str, Path]  # step -> generated step notebook
    pipeline_file: Path | None = None  # the KFP YAML, for engines that have one
    summary: str = ""

    @property
    def links(self) -> dict[str, str]:
        return {"pipeline": str(self.pipeline_file)} if self.pipeline_file else {}


@dataclass(frozen=True)
class Uploaded:
    """What the Upload task registered."""

    message: str
    links: dict[str, str] = field(default_factory=dict)  # for display (KFP UI pages)
    ids: dict[str, str] = field(default_factory=dict)  # RunIds fields: kfp_pipeline_id, kfp_version_id, ...


@dataclass(frozen=True)
class Outcome:
    """How the Run task ended: ``succeeded`` or ``failed`` with one line saying why."""

    status: str
    error: str = ""

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"


class Engine(Protocol):
    name: str
    # Whether a --no-snapshot run's steps see the notebook's folder; one without it (absent: True) has its
    # --no-snapshot runs refused while the workspace holds files (see run.launch).
    live_folder: bool

    def prepare(self, snapshot: SnapshotRef | None, run_dir: "RunDir", will_run: bool) -> None:
        """Take note of the workspace the steps see (``None``: the live folder)."""

    def compile(self, plan: "Plan", run_dir: "RunDir") -> Compiled:
        """Write what the run needs (step notebooks, a pipeline file); talk to no server."""

    def upload(self, plan: "Plan", state: "RunState", compiled: Compiled) -> Uploaded | None:
        """Register the compiled pipeline where it runs; ``None`` when the engine needs no upload."""

    def run(self, plan: "Plan", state: "RunState", run_dir: "RunDir", compiled: Compiled) -> Outcome:
        """Run every step, reporting each into ``state``; return how the run ended."""

    def cancel(self) -> None:
        """Stop as soon as possible; ``run`` then returns a failed outcome."""
