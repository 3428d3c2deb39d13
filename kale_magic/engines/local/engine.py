"""The local engine: every step in its own process, independent steps at the same time.

It writes the run's files through its :class:`~kale_magic.layout.RunDir` (step
notebooks, executed notebooks, logs, saved values, outcomes).  With a
:class:`~kale_magic.cache.StepCache`, a ready step whose cache key matches an
earlier success is not run: its outputs are hard-linked from that run instead.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ...layout import RunDir, StepOutcome
from ...plan import Plan
from ...step.notebooks import write_step_notebooks
from ...step.runtime import StepContext
from ..base import Compiled, Outcome, SnapshotRef
from .scheduler import Schedule, StepInstance
from .workers import WorkerServer

if TYPE_CHECKING:  # engines report into a run's state; the run package drives them
    from ...run.state import RunState


def died(name: str, exit_code: int | None) -> str:
    """Why a step's process ended without reporting.  SIGKILL that the engine did not send comes from
    the kernel's out-of-memory killer almost always (or a user's ``kill -9``): say so, and what to do."""
    if exit_code == -signal.SIGKILL:
        from ...files import human_size

        try:
            memory = f"this machine has {human_size(os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE'))}"
        except (ValueError, OSError):
            memory = "see how much memory this machine has"
        return (f"step '{name}' was killed (SIGKILL) before reporting, most likely by the system for using too "
                f"much memory ({memory}): make it hold less at once, or give it more with --memory on KFP or "
                "a machine with more memory; see its log")
    if exit_code is not None and exit_code < 0:
        try:
            how = f"was killed by {signal.Signals(-exit_code).name}"
        except ValueError:
            how = f"was killed by signal {-exit_code}"
        return f"step '{name}' {how} before reporting; see its log"
    return f"step '{name}' process died (exit status {exit_code}) before reporting; see its log"


class LocalEngine:
    name = "local"

    def __init__(self, workers: WorkerServer | None = None, max_parallel: int = 8, cache=None):
        self.workers = workers or WorkerServer()
        self.max_parallel = max(1, max_parallel)
        self.workdir: Path | None = None  # the materialized snapshot steps work in (prepare)
        self.cache = cache  # a kale_magic.cache.StepCache, or None to run every step
        self.environments = None  # each step's --env/--secret variables, resolved by compile for a run
        self._will_run = True
        self._cancel = threading.Event()

    def prepare(self, snapshot: SnapshotRef | None, run_dir: RunDir, will_run: bool) -> None:
        """Steps work in a materialized copy of the snapshot; their cache keys see the files there."""
        self.workdir = None
        self._will_run = will_run
        if snapshot is None or not will_run:
            return
        from ...snapshot import materialize
        from ...snapshot.manifest import read_manifest

        self.workdir = materialize(snapshot.store, snapshot.id, run_dir.workspace)
        if self.cache is not None:
            from ...cache.workspace import SnapshotFiles

            manifest = read_manifest(snapshot.store, snapshot.id)
            self.cache.files = SnapshotFiles(manifest, snapshot.store, self.workdir)

    def compile(self, plan: Plan, run_dir: RunDir) -> Compiled:
        """One step notebook per step; for a run, each step's variables (a missing secret refuses it here)."""
        from ...step.environment import resolve

        self.workers.start()  # warm up while notebooks are written
        notebooks = write_step_notebooks(plan, run_dir)
        if not self._will_run:
            return Compiled(notebooks)
        self.environments = resolve(plan)
        sources = self.environments.summary()
        return Compiled(notebooks, summary=f"{len(notebooks)} step notebooks" + (f"; {sources}" if sources else ""))

    def upload(self, plan: Plan, state: RunState, compiled: Compiled) -> None:
        """Nothing to upload: the steps run here."""
        return None

    def cancel(self) -> None:
        self._cancel.set()

    def run(self, plan: Plan, state: RunState, run_dir: RunDir, compiled: Compiled) -> Outcome:
        """Run every step whose parents succeeded; a failed step skips its descendants only.

        The :class:`Schedule` decides what runs and the cache whether a step can be reused; this loop
        is the only owner of what is running (watcher threads only post events to it) and the only
        writer of step states.
        """
        self.workers.start()
        run_dir.make_step_dirs()
        schedule = Schedule({name: step.parents for name, step in plan.steps.items()})
        running: dict[StepInstance, tuple] = {}  # instance -> (child, started); this loop's alone
        stopped: dict[StepInstance, str] = {}  # instance -> why the engine killed it
        events: queue.Queue = queue.Queue()  # (instance, started at | None for its end), from the watchers
        warming: list[StepInstance] = []  # submitted before the worker had imported its modules

        def watch(instance, child):
            try:  # forked (a pid) even if it has already exited: a quick step's row gets its links all the same
                if child.started.wait(600) and child.pid is not None:
                    events.put((instance, time.time()))
                child.done.wait()
            finally:  # whatever happened above, the loop must hear that the step ended
                events.put((instance, None))

        while True:
            for instance in schedule.ready():
                if len(running) >= self.max_parallel:
                    break
                if plan.steps[instance.step].options.condition and self._gated(instance, plan, schedule, state,
                                                                                run_dir):
                    continue
                reused = self.cache and self.cache.reuse(plan, instance.step, run_dir, plan.parameters, state.run_id)
                if reused:
                    schedule.end(instance, "cached")
                    state.add_metrics(reused.metrics)
                    state.step(instance.step, "cached", cached_from=reused.run_id, cache_key=reused.key,
                               message=f"reused from run {reused.run_id}", **reused.links)
                    continue
                if not warming and not self.workers.ready:  # its jobs wait for it: cold imports cost more
                    warming.append(instance)
                    state.task("Run", "running", "waiting for the warm worker to import the notebook's modules"
                               if self.workers.importing else "waiting for the warm worker to start")
                notebook = compiled.notebooks[instance.step]
                child = self.workers.submit(self._job(plan, instance.step, run_dir, notebook))
                schedule.start(instance)
                running[instance] = (child, time.time())
                threading.Thread(target=watch, args=(instance, child), daemon=True).start()
            if not running:
                if schedule.ready():  # cached steps made their children ready
                    continue
                break
            for instance, started in self._events(events, self._next_deadline(plan, running)):
                if started is not None:
                    self._started(instance, started, running, warming, state, run_dir)
                else:
                    self._ended(instance, running.pop(instance), schedule, stopped, plan, state, run_dir)
            if self._cancel.is_set():
                for instance, (child, _) in running.items():
                    stopped.setdefault(instance, f"step '{instance}' was cancelled")
                    self.workers.kill(child)
            self._kill_overdue(plan, running, stopped)
        if self.cache:
            self.cache.done()
        if self._cancel.is_set():
            for instance, why in schedule.cancel().items():
                state.step(instance.step, "skipped", message=why)
            return Outcome("failed", "the run was cancelled")
        if schedule.failed:
            first = schedule.failed[0].step
            return Outcome("failed", f"step '{first}' failed: {state.steps[first].message}")
        return Outcome("succeeded")

    # helpers ------------------------------------------------------------------------------
    @staticmethod
    def _events(events: queue.Queue, timeout: float) -> list:
        """The watchers' events: the first within ``timeout`` seconds, then all that are already there."""
        try:
            got = [events.get(timeout=timeout)]
        except queue.Empty:
            return []
        while True:
            try:
                got.append(events.get_nowait())
            except queue.Empty:
                return got

    @staticmethod
    def _started(instance, started, running, warming, state, run_dir) -> None:
        running[instance] = (running[instance][0], started)
        if warming and warming[0] == instance:
            state.task("Run", "running", "")
        name = instance.step
        state.step(name, "running", log=str(run_dir.log(name)), notebook=str(run_dir.executed(name)))

    def _ended(self, instance, entry, schedule, stopped, plan, state, run_dir) -> None:
        """Report how ``instance`` ended (the cache remembers a success) and skip what its failure stops."""
        (child, started), name = entry, instance.step
        outcome = self._outcome(run_dir, name, child.exit, stopped.get(instance))
        skipped = schedule.end(instance, outcome.status)
        state.add_metrics(outcome.metrics)
        if self.cache:
            self.cache.remember(plan, name, outcome, state.run_id)
        note = self.cache.notes.get(name, "") if self.cache else ""
        state.step(name, outcome.status, started=started, message=outcome.error or note,
                   traceback=outcome.traceback, cache_key=self.cache.key_of(name) if self.cache else None)
        for other, why in skipped.items():
            state.step(other.step, "skipped", message=why)

    @staticmethod
    def _gated(instance, plan: Plan, schedule: Schedule, state, run_dir: RunDir) -> bool:
        """Evaluate ``instance``'s ``--if`` on the values its ancestors saved (here, before anything runs:
        a false one costs no process); False lets it run, else it ended skipped or failed, and so did what
        its end skips."""
        from ... import marshal
        from ...plan.condition import parse_condition

        step = plan.steps[instance.step]
        condition = parse_condition(step.options.condition)
        try:
            values = {name: plan.parameters[name] for name in step.condition_parameters}
            for t in step.condition_inputs:
                values[t.name] = marshal.load(str(run_dir.value(t.producer, t.name)), name=t.name, step=t.producer)
            if condition.holds(values):
                return False
            status, why = "skipped", condition.why_false(values)
        except Exception as exc:  # the expression's own error, or a value that would not load
            status = "failed"
            why = f'the --if "{condition.text}" of step \'{step.name}\' raised {type(exc).__name__}: {exc}'
        for other, reason in schedule.end(instance, status, why).items():
            state.step(other.step, "skipped", message=reason)
        state.step(instance.step, status, message=why)
        return True

    def _job(self, plan: Plan, name: str, run_dir: RunDir, notebook: Path) -> dict:
        step = plan.steps[name]
        context = StepContext(
            step=name,
            inputs={t.name: str(run_dir.value(t.producer, t.name)) for t in step.inputs},
            producers={t.name: t.producer for t in step.inputs},
            outputs={t.name: str(run_dir.value(name, t.name)) for t in step.outputs},
            metrics_path=str(run_dir.metrics_file(name)),
        )
        root = plan.notebook_path.parent if plan.notebook_path else Path.cwd()
        cwd = self.workdir or root
        sys_path = into_snapshot(sys.path, root, self.workdir) if self.workdir else list(sys.path)
        return {
            "notebook": str(notebook), "executed": str(run_dir.executed(name)),
            "log": str(run_dir.log(name)), "outcome": str(run_dir.outcome_file(name)),
            "context": json.loads(context.to_json()), "cwd": str(cwd),
            "env": {**os.environ, **(self.environments.variables.get(name, {}) if self.environments else {})},
            "sys_path": sys_path,
        }

    @staticmethod
    def _outcome(run_dir: RunDir, name: str, exit_code, stopped: str | None) -> StepOutcome:
        """What the step reported; else why the engine stopped it; else how its process died."""
        outcome = run_dir.read_outcome(name)
        if outcome is not None:
            return outcome
        return StepOutcome("failed", error=stopped or died(name, exit_code))

    def _next_deadline(self, plan: Plan, running: dict) -> float:
        """How long the loop may wait for an event: until the next --timeout, and at most 0.5 s (Ctrl-C)."""
        waits = [started + plan.steps[i.step].options.timeout - time.time()
                 for i, (_, started) in running.items() if plan.steps[i.step].options.timeout]
        return max(0.05, min([0.5, *waits]))

    def _kill_overdue(self, plan: Plan, running: dict, stopped: dict) -> None:
        for instance, (child, started) in running.items():
            timeout = plan.steps[instance.step].options.timeout
            if timeout and time.time() - started >= timeout and instance not in stopped:
                stopped[instance] = (f"step '{instance}' ran longer than its --timeout of {timeout} s "
                                     "and was stopped")
                self.workers.kill(child)


def into_snapshot(path: list[str], root: Path, workdir: Path) -> list[str]:
    """The import path of a step working in ``workdir``: each absolute entry inside the notebook's folder
    (``/nb``, ``/nb/src`` from ``sys.path.insert(0, os.path.abspath("src"))``) points into the snapshot, so
    local modules come from the run's copy, never the live folder, and their files are inputs of the step's
    key.  Relative entries (``''``, ``src``) already resolve there: the step works in the snapshot."""
    real_root = os.path.realpath(root)
    out = []
    for entry in path:
        if entry and os.path.isabs(entry):
            full = os.path.realpath(entry)
            if full == real_root or full.startswith(real_root.rstrip(os.sep) + os.sep):
                rel = os.path.relpath(full, real_root)
                entry = str(workdir) if rel == "." else os.path.join(str(workdir), rel)
        out.append(entry)
    return out
