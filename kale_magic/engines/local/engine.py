"""The local engine: every step in its own process, independent steps at the same time.

It writes the run's files through its :class:`~kale_magic.layout.RunDir` (step
notebooks, executed notebooks, logs, saved values, outcomes).  With a
:class:`~kale_magic.cache.StepCache`, a ready step whose cache key matches an
earlier success is not run: its outputs are hard-linked from that run instead.
"""

from __future__ import annotations

import json
import os
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


class _Ready:
    """The pending steps whose parents all succeeded or were cached, in plan order, kept as steps end:
    looking at every step after each one ended made a run quadratic in its number of steps."""

    def __init__(self, plan: Plan, status: dict[str, str]):
        self.status = status
        self.position = {name: i for i, name in enumerate(plan.steps)}
        self.unmet = {name: len(set(step.parents)) for name, step in plan.steps.items()}
        self.children: dict[str, list[str]] = {name: [] for name in plan.steps}
        for name, step in plan.steps.items():
            for parent in set(step.parents):
                self.children[parent].append(name)
        self.ready = {name for name, count in self.unmet.items() if count == 0}

    def done(self, name: str) -> None:
        """Step ``name`` succeeded or was cached: its children may be ready."""
        for child in self.children[name]:
            self.unmet[child] -= 1
            if self.unmet[child] == 0:
                self.ready.add(child)

    def steps(self) -> list[str]:
        self.ready = {name for name in self.ready if self.status[name] == "pending"}
        return sorted(self.ready, key=self.position.__getitem__)


class LocalEngine:
    name = "local"

    def __init__(self, workers: WorkerServer | None = None, max_parallel: int = 8, cache=None):
        self.workers = workers or WorkerServer()
        self.max_parallel = max(1, max_parallel)
        self.workdir: Path | None = None  # the materialized snapshot steps work in (prepare)
        self.cache = cache  # a kale_magic.cache.StepCache, or None to run every step
        self._cancel = threading.Event()

    def prepare(self, snapshot: SnapshotRef | None, run_dir: RunDir, will_run: bool) -> None:
        """Steps work in a materialized copy of the snapshot; their cache keys see the files there."""
        self.workdir = None
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
        """One step notebook per step."""
        self.workers.start()  # warm up while notebooks are written
        return Compiled(write_step_notebooks(plan, run_dir))

    def upload(self, plan: Plan, state: RunState, compiled: Compiled) -> None:
        """Nothing to upload: the steps run here."""
        return None

    def cancel(self) -> None:
        self._cancel.set()

    def run(self, plan: Plan, state: RunState, run_dir: RunDir, compiled: Compiled) -> Outcome:
        """Run every step whose parents succeeded; a failed step skips its descendants only."""
        self.workers.start()
        notebooks = compiled.notebooks
        parameters = plan.parameters
        run_dir.make_step_dirs()
        status = {name: "pending" for name in plan.steps}
        ready = _Ready(plan, status)
        running: dict[str, tuple] = {}
        stopped: dict[str, str] = {}  # step -> why the engine killed it
        done = threading.Condition()
        finished: list[str] = []

        warming = []  # steps submitted before the worker had imported its modules

        def watch(name, child):
            try:
                # Forked (a pid) even if it has already exited: a quick step's row gets its links all the same.
                if child.started.wait(600) and child.pid is not None:
                    if warming and warming[0] == name:
                        state.task("Run", "running", "")
                    state.step(name, "running", log=str(run_dir.log(name)), notebook=str(run_dir.executed(name)))
                    running[name] = (child, time.time())
                child.done.wait()
            finally:  # whatever happened above, the loop must hear that the step ended
                with done:
                    finished.append(name)
                    done.notify()

        while True:
            for name in ready.steps():
                if len(running) >= self.max_parallel:
                    break
                if self.cache and self.cache.reuse(plan, name, run_dir, parameters, state):
                    status[name] = "cached"
                    ready.done(name)
                    continue
                if not warming and not self.workers.ready:  # its jobs wait for it: cold imports cost more
                    warming.append(name)
                    state.task("Run", "running", "waiting for the warm worker to import the notebook's modules"
                               if self.workers.importing else "waiting for the warm worker to start")
                child = self.workers.submit(self._job(plan, name, run_dir, notebooks[name]))
                status[name] = "running"
                running[name] = (child, time.time())
                threading.Thread(target=watch, args=(name, child), daemon=True).start()
            if not running:
                if ready.steps():  # cached steps made their children ready
                    continue
                break
            with done:
                done.wait_for(lambda: finished or self._cancel.is_set(), timeout=self._next_deadline(plan, running))
                ended, finished[:] = list(finished), []
            if self._cancel.is_set():
                for name, (child, _) in running.items():
                    stopped.setdefault(name, f"step '{name}' was cancelled")
                    self.workers.kill(child)
            self._kill_overdue(plan, running, stopped)
            for name in ended:
                child, started = running.pop(name)
                outcome = self._outcome(run_dir, name, child.exit, stopped.get(name))
                status[name] = outcome.status
                if outcome.status == "succeeded":
                    ready.done(name)
                state.add_metrics(outcome.metrics)
                if self.cache:
                    self.cache.remember(plan, name, outcome, state)
                note = self.cache.notes.get(name, "") if self.cache else ""
                state.step(name, outcome.status, started=started, message=outcome.error or note,
                           traceback=outcome.traceback, cache_key=self.cache.key_of(name) if self.cache else None)
                if outcome.status == "failed":
                    for skipped in self._descendants(plan, name):
                        if status[skipped] == "pending":
                            status[skipped] = "skipped"
                            state.step(skipped, "skipped", message=f"skipped: upstream step '{name}' failed")
        if self.cache:
            self.cache.done()
        failed = [n for n, s in status.items() if s == "failed"]
        if self._cancel.is_set():
            for name, s in status.items():
                if s == "pending":
                    state.step(name, "skipped", message="skipped: the run was cancelled")
            return Outcome("failed", "the run was cancelled")
        if failed:
            return Outcome("failed", f"step '{failed[0]}' failed: {state.steps[failed[0]].message}")
        return Outcome("succeeded")

    # helpers ------------------------------------------------------------------------------
    @staticmethod
    def _descendants(plan: Plan, name: str) -> list[str]:
        out: list[str] = []
        for step in plan.steps.values():  # topological order: parents come first
            if name in step.parents or any(p in out for p in step.parents):
                out.append(step.name)
        return out

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
        # local modules (`import utils`) come from the snapshot too, not the live folder
        sys_path = [str(cwd) if self.workdir and p and os.path.abspath(p) == str(root) else p for p in sys.path]
        return {
            "notebook": str(notebook), "executed": str(run_dir.executed(name)),
            "log": str(run_dir.log(name)), "outcome": str(run_dir.outcome_file(name)),
            "context": json.loads(context.to_json()), "cwd": str(cwd),
            "env": dict(os.environ), "sys_path": sys_path,
        }

    @staticmethod
    def _outcome(run_dir: RunDir, name: str, exit_code, stopped: str | None) -> StepOutcome:
        """What the step reported; else why the engine stopped it; else how its process died."""
        outcome = run_dir.read_outcome(name)
        if outcome is not None:
            return outcome
        return StepOutcome("failed", error=stopped or died(name, exit_code))

    def _next_deadline(self, plan: Plan, running: dict) -> float | None:
        waits = [started + plan.steps[n].options.timeout - time.time()
                 for n, (_, started) in running.items() if plan.steps[n].options.timeout]
        return max(0.05, min(waits)) if waits else 0.5

    def _kill_overdue(self, plan: Plan, running: dict, stopped: dict[str, str]) -> None:
        for name, (child, started) in running.items():
            timeout = plan.steps[name].options.timeout
            if timeout and time.time() - started >= timeout and name not in stopped:
                stopped[name] = f"step '{name}' ran longer than its --timeout of {timeout} s and was stopped"
                self.workers.kill(child)
