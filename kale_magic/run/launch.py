"""One road through a run: :func:`start_run`, and its five tasks — Validate, Snapshot, Compile, Upload,
Run — one small function each.

``%kale_run`` and ``kale-magic run`` both call :func:`start_run` with plain data: the request, the
:class:`Workspace` resolved once, what the notebook recorded, the engine, the listeners.
Each task reports into the run's :class:`~kale_magic.run.state.RunState`; a task
that fails calls ``state.fail(task, message)``, which skips the rest and ends
the run, and re-raises so the notebook cell fails with the same sentence.
Engines are driven through the :class:`~kale_magic.engines.base.Engine`
protocol only.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import skips
from ..engines.base import Compiled, Engine, Outcome, SnapshotRef
from ..errors import KaleError
from ..files import atomic_write
from ..layout import KaleDir, RunDir
from ..plan import Plan
from ..plan.planner import Environment, build_plan, default_pipeline_name
from ..plan.selection import NOT_SELECTED
from ..plan.report import plan_text
from ..plan.session import RecordedCell
from .debug import record_flows
from .handle import Run
from .state import RunState


@dataclass
class RunRequest:
    experiment: str = "Default"
    pipeline: str | None = None
    description: str = ""
    engine: str = "local"
    host: str | None = None
    params: dict[str, str] = field(default_factory=dict)
    compile_only: bool = False
    upload_only: bool = False
    no_snapshot: bool = False
    from_snapshot: str | None = None  # run on the files of this earlier snapshot
    snapshot_max: str | None = None  # size cap, e.g. "10G" (default: the snapshot package's)
    background: bool = False
    no_cache: bool = False  # run every step, reuse no cached result
    resume: str | None = None  # reuse what this run ("" = the last failed run) got done
    schedule: object = None  # a cron.Schedule: create a recurring run on KFP instead of running now
    sweep_id: str | None = None  # this run is a point of that sweep (run.sweep)
    only: tuple[str, ...] = ()  # a partial run: just these steps (--only), or
    from_step: str | None = None  # ... this step and everything downstream (--from), and/or
    to_step: str | None = None  # ... this step and its ancestors (--to)


@dataclass(frozen=True)
class Workspace:
    """Where the notebook lives and where a run writes (``<root>/.kale``); resolved once per run."""

    root: Path
    notebook: Path | None = None
    order_source: str = "execution order"
    cell_order: dict[str, int] = field(default_factory=dict)  # cell id -> position, when the file is used
    name: str | None = None  # what the notebook goes by in the run store and the cache (default: its file's)

    @property
    def kale(self) -> KaleDir:
        return KaleDir(self.root)

    @property
    def pipeline_name(self) -> str:
        return self.name or default_pipeline_name(self.notebook)


@dataclass(frozen=True)
class Recording:
    """What the notebook's cells left: the annotated cells in notebook order and the namespace's view."""

    cells: list[RecordedCell]
    environment: Environment


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def start_run(request: RunRequest, workspace: Workspace, session: Recording, engine: Engine,
              listeners=()) -> Run:
    """Validate, then run; the returned Run's state says how it went.

    A notebook that does not validate is not a run: the :class:`ValidationError` (naming every
    problem) is raised before any listener hears of it, so there is no panel, no record in the
    run store and no file.  A task that fails later ends the run failed and the Run is returned:
    whether the notebook stops is the caller's decision.
    """
    pipeline = request.pipeline or workspace.pipeline_name
    state = RunState(new_run_id(), pipeline, request.experiment, request.engine)
    if request.sweep_id:
        state.set_ids(sweep_id=request.sweep_id)
    cells = session.cells
    plan = validate(request, cells, session.environment, workspace, state)
    selection, runs = select_steps(request, plan, engine)
    for listener in listeners:
        state.subscribe(listener)
    run_dir = workspace.kale.run(state.run_id)
    report_plan(plan, state, run_dir)
    run = Run(state, plan, run_dir)
    for name in selection.not_run if selection else ():
        state.step(name, "skipped", message=f"not run ({NOT_SELECTED}: {selection.option})",
                   skip=skips.NOT_SELECTED)
    try:
        snapshot(request, workspace, cells, state, run_dir, engine)
        compiled = compile_steps(runs, state, run_dir, engine)
        run.pipeline_file = compiled.pipeline_file
        if request.compile_only:
            state.stop("compiled", note="--compile-only")
            return run
        upload(runs, state, engine, compiled)
    except KaleError as exc:  # the task failed the run (state.fail) and the panel shows why
        run.failure = exc
        return run
    if request.upload_only:
        state.stop("uploaded", note="--upload-only")
        return run
    if request.schedule is not None:  # a recurring run on KFP instead of one run now
        schedule(runs, state, engine, request.schedule)
        return run
    run.thread = execute(runs, state, run_dir, engine, compiled)
    if not request.background:
        wait(state, engine, run.thread)
    return run


def validate(request: RunRequest, cells: list[RecordedCell], env: Environment, workspace: Workspace,
             state: RunState) -> Plan:
    """The Validate task: the plan, or a :class:`ValidationError` naming every problem."""
    state.task("Validate", "running")
    return build_plan(cells, env, pipeline=state.pipeline, experiment=request.experiment,
                      description=request.description, overrides=request.params,
                      notebook_path=workspace.notebook, order_source=workspace.order_source)


def select_steps(request: RunRequest, plan: Plan, engine: Engine):
    """A partial run's selection and the plan the engine gets: refused, like a plan that does not
    validate, before any step runs or anything is recorded.  An engine with ``select`` finds where the
    reused values come from and is given the whole plan; another runs the selected steps' sub-pipeline,
    which it can only when nothing is reused."""
    from ..plan.selection import select

    selection = select(plan, request.only, request.from_step, request.to_step)
    if selection is None:
        return None, plan
    if hasattr(engine, "select"):
        engine.select(plan, selection)
        return selection, plan
    if selection.reuse:
        consumer, value = selection.needs(plan, selection.reuse[0])
        raise KaleError(f"{selection.option}: step '{consumer}' needs '{value}' from step '{selection.reuse[0]}', "
                        f"which is not selected, and the {engine.name} engine cannot yet reuse a value from an "
                        f"earlier run; select {selection.reuse[0]} too (or use --to {consumer}), or run on the "
                        "local engine.")
    return selection, selection.subplan(plan)


def report_plan(plan: Plan, state: RunState, run_dir: RunDir) -> None:
    """The Validate task's outcome: the plan as text in the run's folder, the steps in the state."""
    run_dir.path.mkdir(parents=True)
    atomic_write(run_dir.validation, plan_text(plan) + "\n")
    record_flows(plan, run_dir)
    state.set_parameters(plan.parameters)
    state.set_plan(plan)
    flows = sum(len(s.inputs) for s in plan.steps.values())
    notes = f"; note: {plan.notes[0]}" + (f" (and {len(plan.notes) - 1} more in the report)"
                                            if len(plan.notes) > 1 else "") if plan.notes else ""
    state.task("Validate", "done", f"{len(plan.steps)} steps, {len(plan.edges())} edges, {flows} values flow{notes}",
               report=str(run_dir.validation))


def snapshot(request: RunRequest, workspace: Workspace, cells: list[RecordedCell], state: RunState,
             run_dir: RunDir, engine: Engine) -> None:
    """The Snapshot task: freeze the workspace (or reuse a snapshot) and hand it to the engine."""
    will_run = not request.compile_only
    if request.no_snapshot and not request.from_snapshot:
        note = "" if getattr(engine, "live_folder", True) else _empty_folder_note(workspace, engine.name.upper(), will_run)
        try:
            if note and will_run:
                raise KaleError(note)
            engine.prepare(None, run_dir, will_run)
        except KaleError as exc:
            state.fail("Snapshot", str(exc))
            raise
        state.task("Snapshot", "skipped", note or "--no-snapshot: steps run in the notebook's folder")
        return
    state.task("Snapshot", "running")
    try:
        ref, message = _take_snapshot(request, workspace, cells)
        engine.prepare(ref, run_dir, will_run)
    except KaleError as exc:
        state.fail("Snapshot", str(exc))
        raise
    state.set_ids(snapshot_id=ref.id)
    if run_dir.workspace.is_dir():  # the header links the snapshot's files as the steps see them; the row, its manifest
        state.add_links(snapshot=str(run_dir.workspace))
    state.task("Snapshot", "done", message, manifest=str(ref.manifest))


def _empty_folder_note(workspace: Workspace, engine: str, will_run: bool) -> str:
    """Why a ``--no-snapshot`` run of an engine whose steps work in an empty folder (KFP pods) cannot have
    the workspace's files, naming them; "" when the workspace holds nothing but the notebook. Whether a
    step reads a file is not always visible (paths built at run time), so any file counts."""
    from ..snapshot.workspace import scan

    notebook = workspace.notebook.resolve() if workspace.notebook else None
    root = workspace.root.resolve()
    files = [rel for rel, _ in scan(root, exclude=(workspace.kale.path.resolve(),)).files
             if root / rel != notebook]
    if not files:
        return ""
    shown = ", ".join(files[:5]) + (f" and {len(files) - 5} more" if len(files) > 5 else "")
    verb = "cannot run" if will_run else "runs"
    return (f"--no-snapshot: the {engine} steps work in an empty folder, so this pipeline {verb} without the "
            f"workspace files ({shown}); drop --no-snapshot so the snapshot carries them through the pipeline "
            "root (Kfp.pipeline_root), or move what the steps read to a volume (Kfp.volumes) and list the rest "
            "in .kaleignore")


def _take_snapshot(request: RunRequest, workspace: Workspace, cells: list[RecordedCell]) -> tuple[SnapshotRef, str]:
    from ..files import parse_size
    from ..snapshot import DEFAULT_MAX_BYTES, DEFAULT_WARN_BYTES, take_snapshot
    from ..snapshot.manifest import load_snapshot

    store = workspace.kale.snapshots
    if request.from_snapshot:
        taken = load_snapshot(store, request.from_snapshot)
    else:
        try:
            max_bytes = parse_size(request.snapshot_max) if request.snapshot_max else DEFAULT_MAX_BYTES
        except ValueError as exc:
            raise KaleError(f"--snapshot-max: {exc}") from None
        taken = take_snapshot(workspace.root, store, notebook=workspace.notebook, cells=[c.text for c in cells],
                              warn_bytes=DEFAULT_WARN_BYTES, max_bytes=max_bytes)
    reused = " (reused)" if request.from_snapshot else ""
    message = "; ".join([taken.summary() + reused, *taken.warnings])
    return SnapshotRef(taken.id, store, taken.manifest, workspace.root, workspace.notebook), message


def compile_steps(plan: Plan, state: RunState, run_dir: RunDir, engine: Engine) -> Compiled:
    """The Compile task: step notebooks (and, on KFP, the pipeline YAML)."""
    state.task("Compile", "running")
    try:
        compiled = engine.compile(plan, run_dir)
    except KaleError as exc:
        state.fail("Compile", str(exc))
        raise
    if compiled.pipeline_file:
        state.set_ids(yaml_path=str(compiled.pipeline_file))
    state.task("Compile", "done", compiled.summary or f"{len(compiled.notebooks)} step notebooks",
               notebooks=str(run_dir.notebooks), **compiled.links)
    return compiled


def upload(plan: Plan, state: RunState, engine: Engine, compiled: Compiled) -> None:
    """The Upload task: register the pipeline where it runs, when the engine has such a place."""
    try:
        uploaded = engine.upload(plan, state, compiled)
    except KaleError as exc:
        state.fail("Upload", str(exc))
        raise
    if uploaded is None:
        state.task("Upload", "skipped", f"{engine.name} engine: nothing to upload")
        return
    state.set_ids(**uploaded.ids)
    state.add_links(**uploaded.links)
    state.task("Upload", "done", uploaded.message, **uploaded.links)


def schedule(plan: Plan, state: RunState, engine: Engine, wanted) -> None:
    """The Run task of ``--schedule``: the engine creates the recurring run; the run ends ``scheduled``."""
    try:
        created = engine.schedule(plan, state, wanted)
    except KaleError as exc:
        state.fail("Run", str(exc))
        return
    state.add_links(**created.links)
    state.task("Run", "done", created.message, **created.links)
    state.finish("scheduled")


def execute(plan: Plan, state: RunState, run_dir: RunDir, engine: Engine, compiled: Compiled) -> threading.Thread:
    """The Run task, in a thread of its own (so ``--background`` returns at once)."""
    state.task("Run", "running")

    def run() -> None:
        outcome = Outcome("failed", "the engine stopped unexpectedly")
        try:
            outcome = engine.run(plan, state, run_dir, compiled)
        except BaseException as exc:  # an engine bug must still end the run visibly
            outcome = Outcome("failed", f"{type(exc).__name__}: {exc}")
            raise
        finally:
            _finish(plan, state, outcome)

    thread = threading.Thread(target=run, name=f"kale-run-{state.run_id}", daemon=True)
    thread.start()
    return thread


def _finish(plan: Plan, state: RunState, outcome: Outcome) -> None:
    """End the Run task; a failed step's error is on its own row, so the Run row only counts."""
    counts = {status: [s.name for s in state.steps.values() if s.status == status]
              for status in ("failed", "cached", "skipped")}
    if outcome.succeeded:  # a partial run leaves steps alone; a false --if holds steps back
        cached = len(counts["cached"])
        left = sum(state.steps[n].skip == skips.NOT_SELECTED for n in counts["skipped"])
        gated = len(counts["skipped"]) - left
        message = (f"{len(state.steps) - left - gated} steps succeeded"
                   + (f" ({cached} from the cache)" if cached else "")
                   + (f"; {gated} skipped by a condition" if gated else "")
                   + (f"; {left} not run ({NOT_SELECTED})" if left else ""))
        state.task("Run", "done", message)
    elif counts["failed"]:
        skipped = f", {len(counts['skipped'])} skipped" if counts["skipped"] else ""
        state.task("Run", "failed", f"{len(counts['failed'])} of {len(plan.steps)} steps failed "
                                    f"({', '.join(counts['failed'])}){skipped}")
    else:
        state.task("Run", "failed", outcome.error)
    state.finish(outcome.status, outcome.error)


def wait(state: RunState, engine: Engine, thread: threading.Thread) -> None:
    """Block until the run ends; Ctrl-C cancels it (and still waits for the engine to stop)."""
    try:
        while not state.wait(0.1):
            pass
    except KeyboardInterrupt:
        engine.cancel()
        state.wait()
    thread.join()
