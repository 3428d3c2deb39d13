"""The local engine: every step in its own process, independent steps at the same time.

Layout of a run directory (``.kale/runs/<run-id>/``)::

    notebooks/<step>.ipynb   the generated step notebook
    executed/<step>.ipynb    the same notebook with its outputs, after it ran
    logs/<step>.log          stdout/stderr, streamed while the step runs
    data/<step>/<name>/      values a step saved for later steps (marshal directories)
    steps/<step>.json        the step's outcome (status, error, metrics)

With a :class:`~kale_magic.cache.StepCache`, a ready step whose cache key matches an
earlier success is not run: its outputs are hard-linked from that run instead.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

from ...step.notebooks import write_step_notebooks
from ...plan.model import Plan
from ...step.runtime import StepContext, StepOutcome
from ...run.state import RunState
from .workers import WorkerServer


class LocalEngine:
    name = "local"

    def __init__(self, workers: WorkerServer | None = None, max_parallel: int = 8, workdir: Path | None = None,
                 cache=None):
        self.workers = workers or WorkerServer()
        self.max_parallel = max(1, max_parallel)
        self.workdir = workdir
        self.cache = cache  # a kale_magic.cache.StepCache, or None to run every step
        self._cancel = threading.Event()

    def write_notebooks(self, plan: Plan, run_dir: Path, parameters: dict) -> dict[str, Path]:
        """The Compile task: one step notebook per step."""
        return write_step_notebooks(plan, run_dir, parameters)

    def cancel(self) -> None:
        self._cancel.set()

    def run(self, plan: Plan, state: RunState, run_dir: Path, parameters: dict,
            notebooks: dict[str, Path] | None = None) -> tuple[str, str]:
        """Run every step whose parents succeeded; a failed step skips its descendants only.

        Returns the run's final (status, one-line error).
        """
        self.workers.start()  # warm up while notebooks are written
        notebooks = notebooks or self.write_notebooks(plan, run_dir, parameters)
        for sub in ("executed", "logs", "steps", "data"):
            (run_dir / sub).mkdir(parents=True, exist_ok=True)
        status = {name: "pending" for name in plan.steps}
        running: dict[str, tuple] = {}
        done = threading.Condition()
        finished: list[str] = []
        if self.cache:
            self.cache.begin(state)

        def watch(name, child):
            if child.started.wait(600) and child.exit is None:
                state.step(name, "running", log=str(run_dir / "logs" / f"{name}.log"),
                           notebook=str(run_dir / "executed" / f"{name}.ipynb"))
                running[name] = (child, time.time())
            child.done.wait()
            with done:
                finished.append(name)
                done.notify()

        while True:
            for name in self._ready(plan, status):
                if len(running) >= self.max_parallel:
                    break
                if self.cache and self.cache.reuse(plan, name, run_dir, parameters, state):
                    status[name] = "cached"
                    continue
                child = self.workers.submit(self._job(plan, name, run_dir, notebooks[name]))
                status[name] = "running"
                running[name] = (child, time.time())
                threading.Thread(target=watch, args=(name, child), daemon=True).start()
            if not running:
                if self._ready(plan, status):  # cached steps made their children ready
                    continue
                break
            with done:
                done.wait_for(lambda: finished or self._cancel.is_set(), timeout=self._next_deadline(plan, running))
                ended, finished[:] = list(finished), []
            if self._cancel.is_set():
                for child, _ in running.values():
                    self.workers.kill(child)
            self._kill_overdue(plan, running)
            for name in ended:
                child, started = running.pop(name)
                outcome = self._outcome(run_dir, name, child.exit, plan.steps[name].options.timeout, started)
                status[name] = outcome.status
                state.metrics.update(outcome.metrics)
                if self.cache:
                    self.cache.remember(plan, name, outcome, state)
                note = self.cache.notes.get(name, "") if self.cache else ""
                state.step(name, outcome.status, started=started, message=outcome.error or note,
                           traceback=outcome.traceback)
                if outcome.status == "failed":
                    for skipped in self._descendants(plan, name):
                        if status[skipped] == "pending":
                            status[skipped] = "skipped"
                            state.step(skipped, "skipped", message=f"skipped: upstream step '{name}' failed")
        failed = [n for n, s in status.items() if s == "failed"]
        if self._cancel.is_set():
            for name, s in status.items():
                if s == "pending":
                    state.step(name, "skipped", message="skipped: the run was cancelled")
            return "failed", "the run was cancelled"
        if failed:
            return "failed", f"step '{failed[0]}' failed: {state.steps[failed[0]].message}"
        return "succeeded", ""

    # helpers ------------------------------------------------------------------------------
    @staticmethod
    def _ready(plan: Plan, status: dict[str, str]) -> list[str]:
        return [n for n, s in status.items()
                if s == "pending" and all(status[p] in ("succeeded", "cached") for p in plan.steps[n].parents)]

    @staticmethod
    def _descendants(plan: Plan, name: str) -> list[str]:
        out: list[str] = []
        for step in plan.steps.values():  # topological order: parents come first
            if name in step.parents or any(p in out for p in step.parents):
                out.append(step.name)
        return out

    def _job(self, plan: Plan, name: str, run_dir: Path, notebook: Path) -> dict:
        step = plan.steps[name]
        data = run_dir / "data"
        context = StepContext(
            step=name,
            inputs={t.name: str(data / t.producer / t.name) for t in step.inputs},
            producers={t.name: t.producer for t in step.inputs},
            outputs={t.name: str(data / name / t.name) for t in step.outputs},
            metrics_path=str(run_dir / "steps" / f"{name}.metrics.json"),
        )
        root = plan.notebook_path.parent if plan.notebook_path else Path.cwd()
        cwd = self.workdir or root
        # local modules (`import utils`) come from the snapshot too, not the live folder
        sys_path = [str(cwd) if self.workdir and p and os.path.abspath(p) == str(root) else p for p in sys.path]
        return {
            "notebook": str(notebook), "executed": str(run_dir / "executed" / f"{name}.ipynb"),
            "log": str(run_dir / "logs" / f"{name}.log"), "outcome": str(run_dir / "steps" / f"{name}.json"),
            "context": json.loads(context.to_json()), "cwd": str(cwd),
            "env": dict(os.environ), "sys_path": sys_path,
        }

    @staticmethod
    def _outcome(run_dir: Path, name: str, exit_code, timeout, started) -> StepOutcome:
        path = run_dir / "steps" / f"{name}.json"
        if path.exists():
            return StepOutcome(**json.loads(path.read_text()))
        if timeout and time.time() - started >= timeout:
            error = f"step '{name}' ran longer than its --timeout of {timeout} s and was stopped"
        else:
            error = f"step '{name}' process died (exit status {exit_code}) before reporting; see its log"
        return StepOutcome("failed", error=error)

    def _next_deadline(self, plan: Plan, running: dict) -> float | None:
        waits = [started + plan.steps[n].options.timeout - time.time()
                 for n, (_, started) in running.items() if plan.steps[n].options.timeout]
        return max(0.05, min(waits)) if waits else 0.5

    def _kill_overdue(self, plan: Plan, running: dict) -> None:
        for name, (child, started) in running.items():
            timeout = plan.steps[name].options.timeout
            if timeout and time.time() - started >= timeout:
                self.workers.kill(child)
