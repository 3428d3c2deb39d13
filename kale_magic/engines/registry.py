"""The engine registry: which engines exist, which one a run uses, and what each knows about its runs.

An engine is described by an :class:`EngineType` — cheap to import, it names the
modules to load only when a run needs them.  Third-party packages add engines in
the entry-point group ``kale_magic.engines`` (name = engine name, value = an
``EngineType`` subclass or instance); they are loaded on first use, and one that
fails to load is reported, not fatal: the other engines keep working.

Everything that depends on *which* engine ran lives behind this interface (how a
run picks it, what its run's values need to load back, what an interrupted run
means, its settings and its CLI subcommands), so no module outside ``engines/``
compares an engine's name.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from ..errors import KaleError

if TYPE_CHECKING:
    from ..layout import RunDir
    from .base import Engine

ENTRY_POINT_GROUP = "kale_magic.engines"


class EngineType:
    """What kale-magic knows about an engine before any run: override what differs from the defaults."""

    name: str = ""
    default: bool = False  # the engine of a run nothing else chooses (the local one)
    local: bool = False  # steps run in this kernel's machine: the step cache, --resume and its check apply

    def settings_class(self):
        """Its traitlets ``Configurable`` (set with ``%config``), or None; the magics make one per kernel."""
        return None

    def chosen(self, args, settings) -> int:
        """How strongly a ``%kale_run``'s options (``args``) and this engine's ``settings`` ask for it:
        2 an option that only it has (``--host``), 1 its configuration (a host set), 0 not at all.
        An explicit ``--engine`` sits between the two."""
        return 0

    def create(self, request, workspace, *, settings, context) -> "Engine":
        """The engine for one run; ``context`` holds the kernel's shared pieces (``workers``,
        ``max_parallel``, ``step_cache(request, workspace)``)."""
        raise NotImplementedError

    def load_value(self, run_dir: "RunDir", step: str, name: str) -> None:
        """Bring a value a step saved into ``run_dir`` (where ``Run.load`` reads it), when it is elsewhere."""

    def saved_items(self, run_dir: "RunDir", step: str) -> list[str] | None:
        """The instances (``step[i]``, in item order) whose values ``Run.load`` lists for ``--foreach`` step
        ``step``, for an engine whose run state does not list a step's items; None when not known. Raises a
        :class:`KaleError` (one sentence) when the items it finds do not add up."""
        return None

    def interrupted(self, pid: int) -> str:
        """What a run of this engine means when the kernel that followed it ended (process ``pid``); the run
        store keeps it with the run's owner."""
        from ..history.store import interrupted

        return interrupted(pid)

    def schedules(self, args, settings, pipeline: str, action: str | None, name: str | None, store) -> str:
        """``%kale_schedules``: the pipeline's schedules as text, or what ``action`` (pause, resume,
        delete) did to schedule ``name``."""
        raise KaleError(f"the {self.name} engine keeps no schedules: %kale_schedules lists those of a Kubeflow "
                        "Pipelines host (set Kfp.host or KF_PIPELINES_ENDPOINT, or give --host URL).")

    def record_scheduled(self, settings, pipeline: str, store) -> str:
        """``%kale_runs``: record in ``store`` the ended runs this engine's schedules of ``pipeline`` started,
        so they show with the schedule's name; what to tell the user, or ""."""
        return ""

    def add_commands(self, subcommands, plan_file) -> None:
        """Add its ``kale-magic`` subcommands to the argparse ``subcommands``; ``plan_file(path,
        pipeline=None, params=None)`` plans a notebook file: (plan, its ``%config`` settings, warnings)."""


class EngineRegistry:
    """Engine types by name; the built-ins, runtime registrations and entry points."""

    def __init__(self, group: str | None = ENTRY_POINT_GROUP):
        self._types: dict[str, EngineType] = {}
        self._group = group
        self._loaded = group is None
        self._loading = threading.RLock()
        self._broken: dict[str, str] = {}  # entry-point name -> why it failed to load

    def register(self, engine_type) -> EngineType:
        """Add (or replace, by name) an engine type class or instance; returns the instance."""
        if isinstance(engine_type, type):
            engine_type = engine_type()
        if not isinstance(engine_type, EngineType):
            raise TypeError(f"an engine must be a kale_magic.engines.EngineType, got {engine_type!r}")
        if not engine_type.name:
            raise TypeError(f"{type(engine_type).__qualname__} has no name")
        self._types[engine_type.name] = engine_type
        return engine_type

    def unregister(self, name: str) -> None:
        self._types.pop(name, None)

    def get(self, name: str) -> EngineType:
        """The engine called ``name``, or a :class:`KaleError` naming the known ones."""
        self._load_entry_points()
        try:
            return self._types[name]
        except KeyError:
            raise KaleError(self._unknown(name)) from None

    def __iter__(self):
        self._load_entry_points()
        return iter(list(self._types.values()))

    def names(self) -> list[str]:
        return [engine_type.name for engine_type in self]

    @property
    def broken(self) -> dict[str, str]:
        """Entry points that failed to load, with why."""
        self._load_entry_points()
        return dict(self._broken)

    def choose(self, engine: str | None, args, settings: dict) -> EngineType:
        """The engine of a run: one that an option only it has asks for, else ``engine`` (--engine), else
        one its configuration asks for, else the default.  ``settings`` maps engine name -> its settings."""
        wants = {t.name: t.chosen(args, settings.get(t.name)) for t in self}
        for strength in (2, 1):
            asked = [name for name, wanted in wants.items() if wanted == strength]
            if strength == 1 and engine:
                return self.get(engine)
            if asked:
                return self.get(asked[0])
        return next(t for t in self if t.default)

    def _unknown(self, name: str) -> str:
        known = ", ".join(sorted(self._types)) or "none"
        if name in self._broken:
            return f"engine '{name}' failed to load ({self._broken[name]}); known engines: {known}"
        return f"no engine named '{name}'; known engines: {known}"

    def _load_entry_points(self) -> None:
        if self._loaded:
            return
        with self._loading:
            if self._loaded:
                return
            self._loaded = True  # a plug-in importing kale_magic.engines while it loads sees the built-ins
            from ..plugins import load_entry_points

            load_entry_points(self._group, self.register, skip=self._types, broken=self._broken, kind="engine")
