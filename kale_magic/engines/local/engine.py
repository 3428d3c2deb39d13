"""The local engine: every step in its own process, independent steps at the same time.

It writes the run's files through its :class:`~kale_magic.layout.RunDir` (step
notebooks, executed notebooks, logs, saved values, outcomes).  With a
:class:`~kale_magic.cache.StepCache`, a ready step whose cache key matches an
earlier success is not run: its outputs are hard-linked from that run instead.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from ...errors import KaleError
from ...layout import RunDir, StepOutcome
from ...plan import Plan
from ...step.notebooks import write_step_notebooks
from ...step.job import StepJob
from ..base import Compiled, Outcome, SnapshotRef
from .executor import Ended, Executor, Started
from .reporter import Reporter
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
        self.selection = None  # a partial run's plan.selection.Selection (select), or None: every step
        self._will_run = True
        self._cancel = threading.Event()
        self._items: dict[str, list] = {}  # a run's foreach steps -> their items (what VAR is in each)
        self._dropped: set[str] = set()  # a run's items a false --if skipped: not in the lists after the loop

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

    def select(self, plan: Plan, selection) -> dict[str, str]:
        """Run only ``selection``'s steps; the steps it reuses come from the step cache (each entry is a
        step's success in an earlier run, keyed on its code, parameters, inputs and files): step -> that
        run, or a :class:`KaleError` naming a value nothing can supply."""
        if self.cache is None:
            raise KaleError(f"{selection.option}: a partial run reuses earlier results through the step cache, "
                            "which this engine was created without.")
        sources = self.cache.sources(plan, plan.parameters, selection)
        self.selection = selection
        return sources

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

        The :class:`Schedule` decides what is ready, the cache whether a ready step is reused, the
        :class:`Executor` runs, kills and times out the rest, and the :class:`Reporter` alone writes
        what happened into ``state``; this loop only passes their answers along.
        """
        self.workers.start()
        run_dir.make_step_dirs()
        kept = set(self.selection.run + self.selection.reuse) if self.selection else set(plan.steps)
        schedule = Schedule({name: tuple(p for p in step.parents if p in kept)
                             for name, step in plan.steps.items() if name in kept},
                            {name: step.foreach.continues for name, step in plan.steps.items()
                             if step.foreach and name in kept})
        fanned: dict[str, list[str]] = {}  # foreach step -> its items' digests (their number: its instances)
        self._items, self._dropped = {}, set()
        if self.cache:
            self.cache.fanned, self.cache.dropped = fanned, self._dropped
        executor = Executor(self.workers, {name: step.options.timeout for name, step in plan.steps.items()},
                            self.max_parallel, self._cancel)
        report = Reporter(state, run_dir)
        ran_because: dict[StepInstance, str] = {}  # the cache's reason for running an instance
        while True:
            for instance in schedule.ready():
                if executor.full:
                    break
                if instance.item is None and plan.steps[instance.step].foreach:
                    self._fan_out(plan, instance, schedule, fanned, report, run_dir)
                    break  # its items are ready now: look again
                gate = held_back(plan, instance, run_dir, self._values(plan, instance, run_dir, fanned)) \
                    if plan.steps[instance.step].options.condition else None
                if gate is not None:  # its --if was false (or raised): it ends here, without a process
                    report.gated(instance, *gate)
                    skipped = schedule.end(instance, *gate)
                    if instance.item is not None and gate[0] == "skipped":
                        self._dropped.update(str(i) for i in [instance, *skipped])
                    report.skipped(skipped)
                    continue
                decision = self.cache.reuse(plan, instance.step, run_dir, plan.parameters, state.run_id,
                                            item=instance.item) if self.cache else None
                unselected = self.selection is not None and instance.step in self.selection.reuse
                if decision is not None and decision.reused:
                    schedule.end(instance, "cached")
                    report.cached(instance, decision.reused, unselected)
                    continue
                if unselected:  # its result was there when the run was checked; something removed it since
                    skipped = schedule.end(instance, "failed")
                    report.unusable(instance, decision.reason or "its earlier result is gone")
                    report.skipped(skipped)
                    continue
                ran_because[instance] = decision.reason if decision else ""
                if not self.workers.ready:
                    report.warming(instance, self.workers.importing)
                executor.submit(instance, self._job(plan, instance, run_dir, compiled.notebooks[instance.step], fanned))
                schedule.start(instance)
            if not executor.running:
                if schedule.ready():  # cached steps made their children ready, or a step fanned out
                    continue
                break
            for event in executor.wait():
                if isinstance(event, Started):
                    report.started(event.instance)
                else:
                    self._ended(event, plan, schedule, report, run_dir, ran_because.pop(event.instance, ""))
        if self.cache:
            self.cache.done()
        if self._cancel.is_set():
            report.skipped(schedule.cancel())
            return Outcome("failed", "the run was cancelled")
        if schedule.failed:
            first = schedule.failed[0]
            return Outcome("failed", f"step '{first.step}' failed: {report.error_of(first)}")
        return Outcome("succeeded")

    # helpers ------------------------------------------------------------------------------
    def _ended(self, event: Ended, plan: Plan, schedule: Schedule, report: Reporter, run_dir: RunDir,
               ran_because: str) -> None:
        """Report how an instance ended (the cache remembers a success) and skip what its failure stops."""
        instance = event.instance
        name, item = instance.step, instance.item
        outcome = outcome_of(run_dir, str(instance), event)
        skipped = schedule.end(instance, outcome.status)
        note = self.cache.remember(plan, name, outcome, report.state.run_id, ran_because, item=item) \
            if self.cache else ""
        report.ended(instance, outcome, event.started, note, self.cache.key_of(name, item) if self.cache else None)
        report.skipped(skipped)

    def _fan_out(self, plan: Plan, instance: StepInstance, schedule: Schedule, fanned: dict, report: Reporter,
                 run_dir: RunDir) -> None:
        """A ``--foreach`` step is ready: its items become instances, and so do those of the steps that
        continue it item by item; a value it cannot loop over fails it, in one sentence."""
        from ...errors import KaleError
        from ...items import item_digest, items

        name = instance.step
        loop = plan.steps[name].foreach
        try:
            values = items(self._loop_value(plan, name, run_dir, fanned), name, loop.name)
        except KaleError as exc:
            report.failed(instance, str(exc))
            report.skipped(schedule.end(instance, "failed"))
            return
        except Exception as exc:  # noqa: BLE001 - a value that does not load fails the step, not the run
            report.failed(instance, f"step '{name}' could not load '{loop.name}' to loop over it: "
                                    f"{type(exc).__name__}: {exc}")
            report.skipped(schedule.end(instance, "failed"))
            return
        digests = [item_digest(v) for v in values]
        chain = [name]
        for other, step in plan.steps.items():  # plan order: a step after the steps it continues
            if step.foreach and set(step.foreach.continues) & set(chain):
                chain.append(other)
        for step in chain:
            fanned[step] = digests
            self._items[step] = values
            schedule.expand(step, len(digests))
            report.fanned_out(step, len(digests))

    @staticmethod
    def _loop_value(plan: Plan, name: str, run_dir: RunDir, fanned: dict):
        """The value a foreach step loops over: a parameter's, or the one its producer saved (a list of
        the items' values when that producer loops itself)."""
        from ... import marshal

        loop = plan.steps[name].foreach
        if loop.producer is None:
            return plan.parameters[loop.name]
        if loop.producer not in fanned:
            return marshal.load(run_dir.value(loop.producer, loop.name), name=loop.name, step=loop.producer)
        return [marshal.load(run_dir.value(label, loop.name), name=loop.name, step=loop.producer)
                for label in self._ran(loop.producer, fanned)]

    def _ran(self, step: str, fanned: dict) -> list[str]:
        """The items of foreach step ``step`` whose values its lists hold: those no false ``--if`` skipped."""
        return [label for label in (str(StepInstance(step, i)) for i in range(len(fanned[step])))
                if label not in self._dropped]

    def _source(self, plan: Plan, instance: StepInstance, producer: str, fanned: dict) -> str | list[str]:
        """Where ``instance`` loads a value ``producer`` saved: the producer, the same item of a step it
        continues, or every item of a looping producer that ran (a list)."""
        if producer not in fanned:
            return producer
        if plan.steps[instance.step].itemwise(producer, plan):
            return str(StepInstance(producer, instance.item))
        return self._ran(producer, fanned)

    def _values(self, plan: Plan, instance: StepInstance, run_dir: RunDir, fanned: dict):
        """What ``instance``'s ``--if`` reads, loaded when called: name -> value (its item as VAR)."""
        from ... import marshal

        def load() -> dict:
            step = plan.steps[instance.step]
            values = {p: plan.parameters[p] for p in step.condition_parameters}
            for t in step.condition_inputs:
                where = self._source(plan, instance, t.producer, fanned)
                values[t.name] = ([marshal.load(str(run_dir.value(w, t.name)), name=t.name, step=t.producer)
                                   for w in where] if isinstance(where, list) else
                                  marshal.load(str(run_dir.value(where, t.name)), name=t.name, step=t.producer))
            if instance.item is not None:
                values[step.foreach.var] = self._items[instance.step][instance.item]
            return values
        return load

    def _job(self, plan: Plan, instance: StepInstance, run_dir: RunDir, notebook: Path, fanned: dict) -> dict:
        name = instance.step
        step = plan.steps[name]

        root = plan.notebook_path.parent if plan.notebook_path else Path.cwd()
        cwd = self.workdir or root
        sys_path = into_snapshot(sys.path, root, self.workdir) if self.workdir else list(sys.path)
        return StepJob(
            step=name, notebook=str(notebook), run=str(run_dir.path), cwd=str(cwd),
            inputs={t.name: self._source(plan, instance, t.producer, fanned) for t in step.inputs},
            producers={t.name: t.producer for t in step.inputs},
            outputs=tuple(t.name for t in step.outputs), backends={t.name: t.backend for t in step.outputs},
            env={**os.environ, **(self.environments.variables.get(name, {}) if self.environments else {})},
            sys_path=tuple(sys_path), item=instance.item,
        ).to_dict()


def held_back(plan: Plan, instance: StepInstance, run_dir: RunDir, values) -> tuple[str, str] | None:
    """None when ``instance``'s ``--if`` holds on the values ``values()`` loads (parameters, values its
    ancestors saved, an item's own VAR and same-clause values); else how it ends and why: ("skipped", the
    condition and its values) or ("failed", the error the expression or a load raised)."""
    from ...plan.condition import parse_condition

    name = str(instance)
    condition = parse_condition(plan.steps[instance.step].options.condition)
    try:
        values = values()
        return None if condition.holds(values) else ("skipped", condition.why_false(values))
    except Exception as exc:  # the expression's own error, or a value that would not load
        return "failed", f'the --if "{condition.text}" of step \'{name}\' raised {type(exc).__name__}: {exc}'


def outcome_of(run_dir: RunDir, name: str, ended: Ended) -> StepOutcome:
    """What the step reported; else why the executor stopped it; else how its process died."""
    outcome = run_dir.read_outcome(name)
    if outcome is not None:
        return outcome
    return StepOutcome("failed", error=ended.stopped or died(name, ended.exit_code))


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
