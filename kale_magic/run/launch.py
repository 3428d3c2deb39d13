"""``%kale_run``'s five tasks: Validate, Snapshot, Compile, Upload, Run.

Kept out of the magics class so the CLI and tests can drive it with plain data.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import KaleError
from ..plan.planner import Environment, build_plan
from ..plan.report import plan_text
from .handle import Run
from ..plan.session import RecordedCell
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


@dataclass
class Workspace:
    """Where the notebook lives and where a run writes (``<root>/.kale``)."""

    root: Path
    notebook: Path | None = None
    order_source: str = "execution order"
    cell_order: dict[str, int] = field(default_factory=dict)  # cell id -> position, when the file is used

    @property
    def kale_dir(self) -> Path:
        return self.root / ".kale"

    @property
    def pipeline_name(self) -> str:
        import re

        stem = self.notebook.stem if self.notebook else "pipeline"
        return re.sub(r"[^a-z0-9-]+", "-", stem.lower()).strip("-") or "pipeline"


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def launch(request: RunRequest, cells: list[RecordedCell], env: Environment, workspace: Workspace,
           engine, listeners=()) -> Run:
    pipeline = request.pipeline or workspace.pipeline_name
    state = RunState(new_run_id(), pipeline, request.experiment, engine.name)
    for listener in listeners:
        state.subscribe(listener)
    run_dir = workspace.kale_dir / "runs" / state.run_id

    state.task("Validate", "running")
    try:
        plan = build_plan(cells, env, pipeline=pipeline, experiment=request.experiment,
                          description=request.description, overrides=request.params,
                          notebook_path=workspace.notebook, order_source=workspace.order_source)
    except KaleError as exc:
        state.task("Validate", "failed", str(exc))
        for task in ("Snapshot", "Compile", "Upload", "Run"):
            state.task(task, "skipped", "")
        state.finish("failed", str(exc))
        raise
    run_dir.mkdir(parents=True)
    report = run_dir / "validation.txt"
    report.write_text(plan_text(plan) + "\n", encoding="utf-8")
    state.parameters = dict(plan.parameters)
    state.set_steps(list(plan.steps))
    flows = sum(len(s.inputs) for s in plan.steps.values())
    state.task("Validate", "done", f"{len(plan.steps)} steps, {len(plan.edges())} edges, {flows} values flow",
               report=str(report))

    if request.no_snapshot and not request.from_snapshot:
        state.task("Snapshot", "skipped", "--no-snapshot: steps run in the notebook's folder")
    else:
        _snapshot(request, workspace, cells, state, run_dir, engine)

    state.task("Compile", "running")
    notebooks = engine.write_notebooks(plan, run_dir, plan.parameters)
    pipeline_file = getattr(engine, "pipeline_file", None)  # the KFP engine's YAML
    links = {"pipeline": str(pipeline_file)} if pipeline_file else {}
    state.task("Compile", "done", f"{len(notebooks)} step notebooks", notebooks=str(run_dir / "notebooks"),
               **links)
    run = Run(state, plan, run_dir, pipeline_file)
    if request.compile_only:
        for task in ("Upload", "Run"):
            state.task(task, "skipped", "--compile-only")
        state.finish("compiled")
        return run

    if hasattr(engine, "upload"):
        engine.upload(plan, state)
        if request.upload_only:
            state.task("Run", "skipped", "--upload-only")
            state.finish("uploaded")
            return run
    else:
        state.task("Upload", "skipped", f"{engine.name} engine: nothing to upload")
    state.task("Run", "running")

    def execute():
        status, error = "failed", "the engine stopped unexpectedly"
        try:
            status, error = engine.run(plan, state, run_dir, plan.parameters, notebooks=notebooks)
        except BaseException as exc:  # an engine bug must still end the run visibly
            error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            cached = sum(1 for s in state.steps.values() if s.status == "cached")
            done = f"{len(plan.steps)} steps succeeded" + (f" ({cached} from the cache)" if cached else "")
            state.task("Run", "done" if status == "succeeded" else "failed", done if status == "succeeded" else error)
            state.finish(status, error)

    thread = threading.Thread(target=execute, name=f"kale-run-{state.run_id}", daemon=True)
    thread.start()
    run.thread = thread
    if not request.background:
        try:
            while not state.wait(0.1):
                pass
        except KeyboardInterrupt:
            engine.cancel()
            state.wait()
        thread.join()
    return run


def _snapshot(request: RunRequest, workspace: Workspace, cells: list[RecordedCell], state: RunState,
              run_dir: Path, engine) -> None:
    """The Snapshot task; local steps then work in the materialized copy, KFP steps in an unpacked one."""
    from ..snapshot import DEFAULT_MAX_BYTES, DEFAULT_WARN_BYTES, parse_size
    from ..snapshot.task import cell_texts, snapshot_task

    local = engine.name == "local" and not request.compile_only
    try:
        try:
            max_bytes = parse_size(request.snapshot_max) if request.snapshot_max else DEFAULT_MAX_BYTES
        except ValueError as exc:
            raise KaleError(f"--snapshot-max: {exc}") from None
        store = workspace.kale_dir / "snapshots"
        snapshot, workdir = snapshot_task(
            state, workspace.root, store, notebook=workspace.notebook, cells=cell_texts(cells),
            from_snapshot=request.from_snapshot, warn_bytes=DEFAULT_WARN_BYTES, max_bytes=max_bytes,
            workdir=run_dir / "workspace" if local else None)
    except KaleError as exc:
        if state.tasks["Snapshot"].status != "failed":
            state.task("Snapshot", "failed", str(exc))
        for task in ("Compile", "Upload", "Run"):
            state.task(task, "skipped", "")
        state.finish("failed", str(exc))
        raise
    if workdir is not None:
        engine.workdir = workdir
        if getattr(engine, "cache", None) is not None:  # the files steps see are part of their cache keys
            from ..cache.workspace import from_manifest

            manifest = json.loads(snapshot.manifest.read_text())
            engine.cache.snapshot = from_manifest(manifest, workspace.root, workspace.notebook)
    elif hasattr(engine, "use_snapshot"):  # KFP: published in its Upload task, imported by every step
        engine.use_snapshot(store, snapshot.id)
