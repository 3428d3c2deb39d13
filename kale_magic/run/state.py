"""The state of one run, observed by the panel, the run store and the ``Run`` object.

:class:`RunState` is the only writer: engines, the cache and ``%kale_run``'s tasks
change it through its methods, each of which takes the lock, replaces what
changed and notifies the listeners with an event name.  Tasks and steps are
immutable records and the mappings it exposes are read-only views, so a reader
can never change a run behind its back; views render from :meth:`RunState.snapshot`,
one consistent picture taken under the lock.

Listeners are called on the thread that made the change (an engine's watcher,
the run's thread), after the lock is released.  A listener that raises is a
view that failed, not a run that failed: it is reported once (which listener,
why), detached, and the run goes on; the engines never see its exception.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Callable, Mapping

from ..skips import skipped_by_condition

if TYPE_CHECKING:
    from ..plan import Plan

TASKS = ("Validate", "Snapshot", "Compile", "Upload", "Run")
TASK_STATUSES = ("pending", "running", "done", "failed", "skipped")
STEP_STATUSES = ("pending", "running", "succeeded", "failed", "cached", "skipped")


@dataclass(frozen=True)
class TaskState:
    name: str
    status: str = "pending"
    message: str = ""
    started: float | None = None
    ended: float | None = None
    links: Mapping[str, str] = field(default_factory=dict)  # label -> URL or path

    @property
    def elapsed(self) -> float | None:
        if self.started is None:
            return None
        return (self.ended or time.time()) - self.started


@dataclass(frozen=True)
class StepState:
    name: str
    status: str = "pending"
    started: float | None = None
    ended: float | None = None
    message: str = ""  # one line: the error of a failed step, the reason of a skip
    skip: str = ""  # a skipped step's kind of reason (kale_magic.skips: condition, failure, cancel, ...)
    traceback: str = ""
    notebook: str | None = None  # executed step notebook (local) or HTML report
    log: str | None = None
    cached_from: str | None = None  # run id whose outputs were reused
    cache_key: str | None = None  # the step's cache key in this run (local engine)
    links: Mapping[str, str] = field(default_factory=dict)
    items: tuple["StepState", ...] | None = None  # a --foreach step's items once known, each named step[i]

    @property
    def duration(self) -> float | None:
        if self.started is None:
            return None
        return (self.ended or time.time()) - self.started


def _moved(state: StepState, status: str, changes: dict) -> StepState:
    """``state`` (a step's or an item's) at ``status`` with ``changes``: its start and end times filled in
    when not given, its links added to the ones it had."""
    changes, now = dict(changes), time.time()
    if status == "running":
        changes["started"] = changes.get("started") or now
    elif status in ("succeeded", "failed", "cached"):
        changes["started"] = changes.get("started") or state.started or now
        changes["ended"] = changes.get("ended") or now
    links = {**state.links, **(changes.pop("links", None) or {})}
    return replace(state, status=status, links=links, **changes)


def _of_items(step: StepState) -> StepState:
    """A foreach step as its items add up: running while one is, failed when one failed, skipped when
    one was skipped because something failed (or all were skipped), cached when all that ran were; its
    times span theirs.  Items a false ``--if`` skipped leave the step succeeded: the others' lists go on."""
    if not step.items:  # nothing to loop over: done at once, each name it produces an empty list
        now = time.time()
        return replace(step, status="succeeded", started=step.started or now, ended=step.ended or now)
    counted = [item for item in step.items if not skipped_by_condition(item)]
    statuses = {item.status for item in counted}
    status = next((s for s in ("running", "pending", "failed", "skipped") if s in statuses),
                  "skipped" if not statuses else "cached" if statuses == {"cached"} else "succeeded")
    if status == "pending" and statuses != {"pending"}:
        status = "running"
    first = next((i for i in counted or step.items if i.status == status and i.message), None)
    starts = [i.started for i in step.items if i.started is not None]
    ends = [i.ended for i in step.items if i.ended is not None]
    done = status not in ("running", "pending")
    return replace(step, status=status, message=f"{first.name}: {first.message}" if first else "",
                   skip=first.skip if first and status == "skipped" else "",
                   started=min(starts) if starts else None, ended=max(ends) if done and ends else None)


@dataclass(frozen=True)
class RunIds:
    """What identifies a run's artifacts elsewhere; data, never parsed back from links."""

    snapshot_id: str | None = None
    yaml_path: str | None = None
    kfp_experiment_id: str | None = None
    kfp_pipeline_id: str | None = None
    kfp_version_id: str | None = None
    kfp_run_id: str | None = None
    sweep_id: str | None = None  # the sweep this run is a point of (%kale_run --sweep)


@dataclass(frozen=True)
class RunSnapshot:
    """One consistent, read-only picture of a run (what views and the store render)."""

    run_id: str
    pipeline: str
    experiment: str
    engine: str
    status: str
    error: str
    started: float
    ended: float | None
    parameters: Mapping[str, object]
    metrics: Mapping[str, object]
    links: Mapping[str, str]
    ids: RunIds
    tasks: Mapping[str, TaskState]
    steps: Mapping[str, StepState]
    plan: Plan | None = None  # from Validate on: what the panel's graph draws

    def snapshot(self) -> "RunSnapshot":
        return self


Listener = Callable[["RunState", str], None]
_STEP_FIELDS = frozenset(f.name for f in fields(StepState)) - {"name", "status", "links"}


class RunState:
    """Tasks, steps and results of one run; thread-safe, listeners called after each change."""

    def __init__(self, run_id: str, pipeline: str, experiment: str, engine: str,
                 steps: list[str] = (), parameters: dict | None = None):
        self.run_id = run_id
        self.pipeline = pipeline
        self.experiment = experiment
        self.engine = engine
        self.started = time.time()
        self._parameters = dict(parameters or {})
        self._tasks = {name: TaskState(name) for name in TASKS}
        self._steps = {name: StepState(name) for name in steps}
        self._plan: Plan | None = None
        self._metrics: dict[str, object] = {}
        self._links: dict[str, str] = {}
        self._ids = RunIds()
        self._ended: float | None = None
        self._status = "running"
        self._error = ""  # one line for a failed run
        self._lock = threading.RLock()
        self._listeners: list[Listener] = []
        self._listener_failures: list[str] = []
        self._finished = threading.Event()

    # reading -------------------------------------------------------------
    status = property(lambda self: self._status)
    error = property(lambda self: self._error)
    ended = property(lambda self: self._ended)
    ids = property(lambda self: self._ids)
    parameters = property(lambda self: MappingProxyType(self._parameters))
    metrics = property(lambda self: MappingProxyType(self._metrics))
    links = property(lambda self: MappingProxyType(self._links))
    tasks = property(lambda self: MappingProxyType(self._tasks))
    steps = property(lambda self: MappingProxyType(self._steps))

    def snapshot(self) -> RunSnapshot:
        with self._lock:
            return RunSnapshot(
                run_id=self.run_id, pipeline=self.pipeline, experiment=self.experiment, engine=self.engine,
                status=self._status, error=self._error, started=self.started, ended=self._ended,
                parameters=MappingProxyType(dict(self._parameters)), metrics=MappingProxyType(dict(self._metrics)),
                links=MappingProxyType(dict(self._links)), ids=self._ids,
                tasks=MappingProxyType(dict(self._tasks)), steps=MappingProxyType(dict(self._steps)),
                plan=self._plan)

    # observers -----------------------------------------------------------
    def subscribe(self, listener: Listener) -> None:
        with self._lock:
            self._listeners.append(listener)

    @property
    def listener_failures(self) -> tuple[str, ...]:
        """One sentence per listener detached because it raised (also printed to stderr when it happened)."""
        with self._lock:
            return tuple(self._listener_failures)

    def _changed(self, event: str) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(self, event)
            except Exception as exc:  # noqa: BLE001 (a view's failure must never stop the run)
                self._detach(listener, event, exc)

    def _detach(self, listener: Listener, event: str, exc: Exception) -> None:
        with self._lock:
            if listener not in self._listeners:
                return  # another thread already reported it
            self._listeners.remove(listener)
            name = (getattr(listener, "view", None) or getattr(getattr(listener, "__self__", None), "view", None)
                    or getattr(listener, "__qualname__", None) or repr(listener))
            sentence = (f"kale: {name} stopped following run {self.run_id} at '{event}' and was detached: "
                        f"{type(exc).__name__}: {exc}; the run goes on")
            self._listener_failures.append(sentence)
        try:
            print(sentence, file=sys.stderr, flush=True)
        except (OSError, ValueError):  # no stderr to tell: listener_failures keeps it
            pass

    # tasks ---------------------------------------------------------------
    def task(self, name: str, status: str, message: str | None = None, **links: str) -> None:
        with self._lock:
            self._set_task(name, status, message, links)
        self._changed(f"task:{name}")

    def _set_task(self, name: str, status: str, message: str | None, links: dict) -> None:
        task, now = self._tasks[name], time.time()
        started, ended = task.started, task.ended
        if status == "running" and started is None:
            started = now
        if status in ("done", "failed", "skipped"):
            started, ended = started or now, now
        self._tasks[name] = replace(task, status=status, started=started, ended=ended,
                                    message=task.message if message is None else message,
                                    links={**task.links, **links})

    # steps ---------------------------------------------------------------
    def set_plan(self, plan: Plan) -> None:
        """The validated plan: one pending step per plan step, and the graph views draw."""
        with self._lock:
            self._plan = plan
            self._steps = {name: self._steps.get(name, StepState(name)) for name in plan.steps}
        self._changed("steps")

    def step(self, name: str, status: str, **changes) -> None:
        """Set a step's status; ``changes`` are StepState fields (``links`` are added to its links)."""
        unknown = set(changes) - _STEP_FIELDS - {"links"}
        if unknown:
            raise TypeError(f"unknown step fields {sorted(unknown)}")
        with self._lock:
            self._steps[name] = _moved(self._steps.get(name) or StepState(name), status, changes)
        self._changed(f"step:{name}")

    def fan_out(self, name: str, count: int) -> None:
        """Step ``name`` runs as ``count`` items (``--foreach``), each pending."""
        with self._lock:
            step = replace(self._steps.get(name) or StepState(name),
                           items=tuple(StepState(f"{name}[{i}]") for i in range(count)))
            self._steps[name] = _of_items(step)
        self._changed(f"step:{name}")

    def item(self, name: str, index: int, status: str, **changes) -> None:
        """Set item ``index`` of foreach step ``name`` like :meth:`step` sets a step; the step adds them up."""
        with self._lock:
            step = self._steps[name]
            items = list(step.items)
            items[index] = _moved(items[index], status, changes)
            self._steps[name] = _of_items(replace(step, items=tuple(items)))
        self._changed(f"step:{name}")

    # results and ids -----------------------------------------------------
    def set_parameters(self, values: Mapping[str, object]) -> None:
        with self._lock:
            self._parameters = dict(values)
        self._changed("parameters")

    def add_metrics(self, values: Mapping[str, object]) -> None:
        with self._lock:
            self._metrics.update(values)
        self._changed("metrics")

    def add_links(self, **links: str) -> None:
        """Run-level links (the KFP experiment, pipeline and run); for display only."""
        with self._lock:
            self._links.update(links)
        self._changed("links")

    def set_ids(self, **ids: str | None) -> None:
        with self._lock:
            self._ids = replace(self._ids, **ids)
        self._changed("ids")

    # the run -------------------------------------------------------------
    def fail(self, task: str, message: str) -> None:
        """``task`` failed with ``message``: the tasks after it are skipped and the run ends failed."""
        with self._lock:
            if self._tasks[task].status != "failed":
                self._set_task(task, "failed", message, {})
        self._changed(f"task:{task}")
        self.stop("failed", message, note="")

    def stop(self, status: str, error: str = "", *, note: str | None = None) -> None:
        """Skip every task that has not run (saying ``note``, default ``error``) and finish the run."""
        with self._lock:
            waiting = [name for name, task in self._tasks.items() if task.status == "pending"]
            for name in waiting:
                self._set_task(name, "skipped", error if note is None else note, {})
        for name in waiting:
            self._changed(f"task:{name}")
        self.finish(status, error if status == "failed" else "")

    def finish(self, status: str, error: str = "") -> None:
        with self._lock:
            self._status = status
            self._error = error
            self._ended = time.time()
        self._changed("finished")
        self._finished.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._finished.wait(timeout)

    @property
    def finished(self) -> bool:
        return self._finished.is_set()
