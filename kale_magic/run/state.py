"""The state of one run, observed by the panel, the run store and the ``Run`` object.

Engines and ``%kale_run`` change it through its methods; every change notifies
the listeners, which only read it.  Views (widget, text) live in ``panel.py``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable

TASKS = ("Validate", "Snapshot", "Compile", "Upload", "Run")
TASK_STATUSES = ("pending", "running", "done", "failed", "skipped")
STEP_STATUSES = ("pending", "running", "succeeded", "failed", "cached", "skipped")


@dataclass
class TaskState:
    name: str
    status: str = "pending"
    message: str = ""
    started: float | None = None
    ended: float | None = None
    links: dict[str, str] = field(default_factory=dict)  # label -> URL or path

    @property
    def elapsed(self) -> float | None:
        if self.started is None:
            return None
        return (self.ended or time.time()) - self.started


@dataclass
class StepState:
    name: str
    status: str = "pending"
    started: float | None = None
    ended: float | None = None
    message: str = ""  # one line: the error of a failed step, the reason of a skip
    traceback: str = ""
    notebook: str | None = None  # executed step notebook (local) or HTML report
    log: str | None = None
    cached_from: str | None = None  # run id whose outputs were reused
    links: dict[str, str] = field(default_factory=dict)

    @property
    def duration(self) -> float | None:
        if self.started is None:
            return None
        return (self.ended or time.time()) - self.started


Listener = Callable[["RunState", str], None]


class RunState:
    """Tasks, steps and results of one run; thread-safe, listeners called after each change."""

    def __init__(self, run_id: str, pipeline: str, experiment: str, engine: str,
                 steps: list[str] = (), parameters: dict | None = None):
        self.run_id = run_id
        self.pipeline = pipeline
        self.experiment = experiment
        self.engine = engine
        self.parameters = dict(parameters or {})
        self.tasks = {name: TaskState(name) for name in TASKS}
        self.steps = {name: StepState(name) for name in steps}
        self.metrics: dict[str, object] = {}
        self.links: dict[str, str] = {}
        self.started = time.time()
        self.ended: float | None = None
        self.status = "running"
        self.error = ""  # one line for a failed run
        self._lock = threading.RLock()
        self._listeners: list[Listener] = []
        self._finished = threading.Event()

    # observers -----------------------------------------------------------
    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def _changed(self, event: str) -> None:
        for listener in list(self._listeners):
            listener(self, event)

    # tasks ---------------------------------------------------------------
    def task(self, name: str, status: str, message: str | None = None, **links: str) -> None:
        with self._lock:
            task = self.tasks[name]
            if status == "running" and task.started is None:
                task.started = time.time()
            if status in ("done", "failed", "skipped"):
                task.started = task.started or time.time()
                task.ended = time.time()
            task.status = status
            if message is not None:
                task.message = message
            task.links.update(links)
        self._changed(f"task:{name}")

    # steps ---------------------------------------------------------------
    def set_steps(self, names: list[str]) -> None:
        with self._lock:
            self.steps = {name: self.steps.get(name, StepState(name)) for name in names}
        self._changed("steps")

    def step(self, name: str, status: str, **fields) -> None:
        with self._lock:
            step = self.steps.setdefault(name, StepState(name))
            now = time.time()
            if status == "running":
                step.started = fields.pop("started", None) or now
            elif status in ("succeeded", "failed", "cached"):
                step.started = fields.pop("started", None) or step.started or now
                step.ended = fields.pop("ended", None) or now
            step.status = status
            links = fields.pop("links", None)
            for key, value in fields.items():
                setattr(step, key, value)
            if links:
                step.links.update(links)
        self._changed(f"step:{name}")

    # the run -------------------------------------------------------------
    def finish(self, status: str, error: str = "") -> None:
        with self._lock:
            self.status = status
            self.error = error
            self.ended = time.time()
        self._changed("finished")
        self._finished.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._finished.wait(timeout)

    @property
    def finished(self) -> bool:
        return self._finished.is_set()
