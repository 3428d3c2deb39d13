"""What runs now: the local engine's executor submits step jobs, kills them, enforces deadlines.

It is the one owner of what is running.  Each submitted job has a watcher thread
that only posts to the executor's queue (the process forked, the process ended);
:meth:`Executor.wait` is called from the engine's loop alone, so the table of
running instances is written by one thread and needs no lock.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable, Mapping

from .scheduler import StepInstance
from .workers import Child, WorkerServer

LONGEST_WAIT = 0.5  # seconds the loop may block on events: Ctrl-C (a cancel) is seen at least this often


@dataclass(frozen=True)
class Started:
    """``instance``'s process was forked at ``at`` (even if it has already exited)."""

    instance: StepInstance
    at: float


@dataclass(frozen=True)
class Ended:
    """``instance``'s process ended: its exit status, when it started, and why the executor killed it
    (None if it did not)."""

    instance: StepInstance
    exit_code: int | None
    started: float
    stopped: str | None


@dataclass
class _Running:
    child: Child
    started: float
    stopped: str | None = None


class Executor:
    """Runs step jobs on a :class:`WorkerServer`.  ``timeouts`` maps a step to its ``--timeout`` (seconds,
    or None); ``cancelled`` is set from another thread (Ctrl-C) to stop every running instance."""

    def __init__(self, workers: WorkerServer, timeouts: Mapping[str, float | None], max_parallel: int,
                 cancelled: threading.Event):
        self.workers = workers
        self.timeouts = dict(timeouts)
        self.max_parallel = max(1, max_parallel)
        self.cancelled = cancelled
        self._running: dict[StepInstance, _Running] = {}  # the engine loop's thread alone
        self._events: queue.Queue = queue.Queue()  # (instance, forked at | None for its end), from watchers

    @property
    def running(self) -> list[StepInstance]:
        return list(self._running)

    @property
    def full(self) -> bool:
        return len(self._running) >= self.max_parallel

    def submit(self, instance: StepInstance, job: dict) -> None:
        child = self.workers.submit(job)
        self._running[instance] = _Running(child, time.time())
        threading.Thread(target=self._watch, args=(instance, child), daemon=True,
                         name=f"kale-watch-{instance}").start()

    def wait(self) -> list[Started | Ended]:
        """The events of the running instances, waiting at most until the next deadline (and
        :data:`LONGEST_WAIT`); then a cancel stops every running instance and an overdue one is killed."""
        events: list[Started | Ended] = []
        for instance, at in self._drain(self._next_wait()):
            entry = self._running[instance]
            if at is not None:
                entry.started = at
                events.append(Started(instance, at))
            else:
                del self._running[instance]
                events.append(Ended(instance, entry.child.exit, entry.started, entry.stopped))
        if self.cancelled.is_set():
            self._stop_all(lambda instance: f"step '{instance}' was cancelled")
        self._kill_overdue()
        return events

    def _stop_all(self, why: Callable[[StepInstance], str]) -> None:
        """Kill every running instance, again on each call: one that had not forked yet is killed once it has."""
        for instance, entry in self._running.items():
            entry.stopped = entry.stopped or why(instance)
            self.workers.kill(entry.child)

    def _kill_overdue(self) -> None:
        now = time.time()
        for instance, entry in self._running.items():
            timeout = self.timeouts.get(instance.step)
            if timeout and now - entry.started >= timeout and entry.stopped is None:
                entry.stopped = f"step '{instance}' ran longer than its --timeout of {timeout} s and was stopped"
                self.workers.kill(entry.child)

    def _next_wait(self) -> float:
        """Until the next --timeout expires, at most :data:`LONGEST_WAIT` (so a cancel is seen)."""
        now = time.time()
        waits = [entry.started + self.timeouts[i.step] - now for i, entry in self._running.items()
                 if self.timeouts.get(i.step)]
        return max(0.05, min([LONGEST_WAIT, *waits]))

    def _drain(self, timeout: float) -> list[tuple[StepInstance, float | None]]:
        """The watchers' events: the first within ``timeout`` seconds, then all that are already there."""
        try:
            got = [self._events.get(timeout=timeout)]
        except queue.Empty:
            return []
        while True:
            try:
                got.append(self._events.get_nowait())
            except queue.Empty:
                return got

    def _watch(self, instance: StepInstance, child: Child) -> None:
        try:  # forked (a pid) even if it has already exited: a quick step's row gets its links all the same
            if child.started.wait(600) and child.pid is not None:
                self._events.put((instance, time.time()))
            child.done.wait()
        finally:  # whatever happened above, the loop must hear that the step ended
            self._events.put((instance, None))
