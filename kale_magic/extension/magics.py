"""The ``Kale`` magics: annotation cell magics that record themselves and run the cell,
and the line magics that show, reset and run the pipeline.

Bodies stay short: parse the arguments (:mod:`.arguments`), record, run.  Analysis
lives in :mod:`kale_magic.plan`, running in :mod:`kale_magic.run` and the engines.
"""

from __future__ import annotations

import sys
from pathlib import Path

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from traitlets import Any, Bool, CaselessStrEnum, Int, List, TraitError, Unicode, validate

from ..errors import KaleError, RunFailed
from ..panel.modes import MODES
from ..plan.session import CELL_KINDS, RecordedCell, Session, StepOptions, cell_key, stale_key
from . import arguments
from .foreach import KernelLoops
from .notebook_file import NotebookFinder

MAX_PARALLEL = 256  # steps at once; each is a process

class CellFailed(Exception):
    """Marks an annotated cell as failed after IPython already showed the error."""

    def _render_traceback_(self):
        return []


def _annotation(cell: str) -> tuple[str, str | None] | None:
    """(kind, step name) when the cell's first code line is one of the annotation magics, even indented."""
    for line in cell.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        magic, _, rest = line.partition(" ")
        if not magic.startswith("%%") or magic[2:] not in CELL_KINDS:
            return None
        name = None
        if magic == "%%step":
            try:
                name = arguments.parse(arguments.step, rest).name
            except Exception:  # noqa: BLE001 - a line the magic itself would refuse: the cell is named by kind
                name = None
        return magic[2:], name
    return None


@magics_class
class Kale(Magics):
    """kale-magic: annotate cells, then ``%kale_run`` them as a pipeline."""

    notebook_path = Unicode(None, allow_none=True, help="The notebook file, when the frontend does not say "
                            "(Jupyter servers and VS Code do).").tag(config=True)
    max_parallel = Int(8, help="How many steps the local engine runs at the same time, and how many "
                       "points of a --sweep run at once.").tag(config=True)
    preload = List(Unicode(), help="Modules the local engine's warm worker imports once besides those the "
                   "%%imports and %%functions cells import (numpy always is), e.g. ['torch'].").tag(config=True)
    preload_imports = Bool(True, help="Let the local engine's warm worker import what the %%imports and "
                           "%%functions cells import, in the background as soon as those cells run, so steps "
                           "start with them loaded (False: only Kale.preload).").tag(config=True)
    stop_on_failure = Bool(True, help="A failed run stops the notebook like a failed cell, after its panel "
                           "shows what happened (False: %kale_run returns the failed Run and the next cells "
                           "run).").tag(config=True)
    panel = CaselessStrEnum(MODES, "auto", help="How runs show progress: ipywidgets, "
                            "an HTML display updated in place, or text lines ('auto' picks).").tag(config=True)
    on_run_end = Any(None, allow_none=True, help="Called with every finished Run, in the kernel, after the "
                     "panel's last update: a callable, or the name of an entry point in group kale_magic.hooks; "
                     "what it raises is reported in one line and never changes the run's status.").tag(config=True)

    @validate("on_run_end")
    def _check_on_run_end(self, proposal):
        from ..run.hooks import GROUP, entry_point_names

        value = proposal.value
        if value is None or callable(value):
            return value
        if isinstance(value, str) and value in entry_point_names():
            return value
        known = ", ".join(entry_point_names()) or "none is installed"
        raise TraitError(f"Kale.on_run_end = {value!r}: give a callable taking the Run, or the name of an entry "
                         f"point in group {GROUP} ({known}).")

    @validate("max_parallel")
    def _check_max_parallel(self, proposal):
        if not 1 <= proposal.value <= MAX_PARALLEL:
            raise TraitError(f"Kale.max_parallel = {proposal.value}: give a number of steps from 1 to {MAX_PARALLEL}.")
        return proposal.value

    @validate("preload")
    def _check_preload(self, proposal):
        bad = [name for name in proposal.value if not all(part.isidentifier() for part in name.split("."))]
        if bad:
            raise TraitError(f"Kale.preload: {bad[0]!r} is not a module name; list importable modules, "
                             "e.g. ['pandas', 'sklearn.linear_model'].")
        return proposal.value

    def __init__(self, shell):
        from .. import engines

        # Each engine's settings (%config Kfp.host = ...), made before the magics read their own
        # configuration, which may still name them the old way (Kale.host).
        self.engine_settings = {t.name: t.settings_class()(parent=shell) for t in engines.registry
                                if t.settings_class() is not None}
        self._renamed: set[str] = set()  # old setting names already noted
        super().__init__(shell)
        self.session = Session()
        self.loops = KernelLoops()  # what --foreach cells produced, for the cells that continue them
        self._notebooks = NotebookFinder()
        self._cell_id: str | None = None
        self._depth = 0
        self._held: dict[str, str] = {}  # step -> why its cells did not run in the kernel (a false --if)
        self._workers = None
        self.last_run = None  # the Run of the latest %kale_run, failed or not (kale_magic.last_run())

    # settings ---------------------------------------------------------------------------
    def _load_config(self, cfg, section_names=None, traits=None):
        """``Kale.<an engine's setting>``, the names from before the engines owned their settings, still
        sets it (on every configuration load, as %config triggers), with a note saying the new name."""
        from traitlets.config import Config

        own = cfg.Kale if "Kale" in cfg else {}
        moved = {name: value for name, value in own.items() if self._owner_of(name) is not None}
        if moved:
            cfg = cfg.copy()
            cfg.Kale = Config({name: value for name, value in own.items() if name not in moved})
        super()._load_config(cfg, section_names, traits)
        for name, value in moved.items():
            self.configure(name, value)

    def __getattr__(self, name: str):
        """``magics.base_image`` and the like: the engines' settings read under their old names."""
        owner = self._owner_of(name) if "engine_settings" in self.__dict__ else None
        if owner is None:
            raise AttributeError(f"'Kale' object has no attribute '{name}'")
        return getattr(owner, name)

    def _owner_of(self, name: str):
        """The engine settings object with a setting ``name`` (an old ``Kale.<name>``), or None."""
        return next((s for s in self.engine_settings.values() if s.has_trait(name)), None)

    def configure(self, name: str, value) -> None:
        """``%config Kale.<name> = value``, also for the engines' settings under their old names; a name
        qualified by an engine's settings class (``Kfp.host``) sets that class's setting."""
        owner_class, _, bare = name.rpartition(".")
        if owner_class and owner_class != "Kale":
            owner = next((s for s in self.engine_settings.values() if type(s).__name__ == owner_class), None)
            if owner is None or not owner.has_trait(bare):
                raise TraitError(f"{owner_class} has no setting '{bare}' (see %config {owner_class}).")
            setattr(owner, bare, value)
            return
        name = bare
        owner = self._owner_of(name) if not self.has_trait(name) else None
        if owner is None:
            if name not in self.class_trait_names(config=True):
                raise TraitError(f"Kale has no setting '{name}' (see %config Kale).")
            setattr(self, name, value)
            return
        new = f"{type(owner).__name__}.{name}"
        if name not in self._renamed:
            self._renamed.add(name)
            print(f"kale: %config Kale.{name} is now %config {new}; the old name works for now", file=sys.stderr)
        try:
            setattr(owner, name, value)
        except TraitError as exc:  # said with the name the user wrote
            raise TraitError(str(exc).replace(new, f"Kale.{name}", 1)) from None

    # lifecycle --------------------------------------------------------------------------
    def attach(self) -> None:
        """Called by ``load_ext``: hear which frontend cell runs and which failed before it ran; let %config
        reach the engines' settings."""
        self.shell.events.register("pre_run_cell", self._pre_run_cell)
        self.shell.events.register("post_run_cell", self._post_run_cell)
        self.shell.configurables.extend(self.engine_settings.values())

    def detach(self) -> None:
        """Called by ``unload_ext``: undo :meth:`attach` and stop the warm worker."""
        self.shell.events.unregister("pre_run_cell", self._pre_run_cell)
        self.shell.events.unregister("post_run_cell", self._post_run_cell)
        for settings in self.engine_settings.values():
            if settings in self.shell.configurables:
                self.shell.configurables.remove(settings)
        if self._workers is not None:
            self._workers.close()
            self._workers = None

    @property
    def workers(self):
        """The warm worker server of this kernel's local engine (started on first use)."""
        from ..engines.local.workers import WorkerServer

        if self._workers is None:
            self._workers = WorkerServer()
        return self._workers

    @workers.setter
    def workers(self, server) -> None:
        """Share a worker server (tests give every kernel the same one); ``None`` forgets it unclosed."""
        self._workers = server

    def _pre_run_cell(self, info) -> None:
        if self._depth == 0:  # the frontend's cell, not one we run from inside a magic
            self._cell_id = getattr(info, "cell_id", None)

    def _post_run_cell(self, result) -> None:
        """An annotated cell IPython could not even transform (``IndentationError ... (<tokenize>, ...)``)
        never reached its magic: what it recorded before is now old code, which %kale_run must not run."""
        error = result.error_before_exec
        if self._depth or error is None or result.info is None:
            return
        magic = _annotation(result.info.raw_cell or "")
        if magic is None:
            return
        kind, step = magic
        label = f"the %%step {step} cell" if step else f"a %%{kind} cell"
        self.session.mark_stale(stale_key(kind, step, getattr(result.info, "cell_id", None)),
                                f"{label} failed before it ran ({type(error).__name__}: {error}), so kale still "
                                "holds its previous version; fix the cell and run it again before %kale_run")

    # recording ------------------------------------------------------------------------------
    def _record_and_run(self, kind: str, cell: str, step: str | None = None,
                        options: StepOptions = StepOptions(), silent: bool = False, why_not: str | None = None):
        """Run the cell and record it; ``why_not``: an ``--if`` cell whose condition is false, recorded unrun."""
        from ..plan.planner import is_bookkeeping

        cell = cell.rstrip("\n")
        python = self.shell.transform_cell(cell)
        key = cell_key(kind, step, self._cell_id, cell)
        ns = self.shell.user_ns
        before = {name: id(value) for name, value in ns.items()}
        if kind in ("imports", "functions"):
            self._warm(key, python)  # the worker imports them while the kernel does
        if why_not is not None:
            print(f"kale: step {step} did not run: {why_not}")
            self.session.record(RecordedCell(kind, cell, python, key, 0, self._cell_id, step, options))
            return
        self._depth += 1
        try:
            def run_body() -> bool:
                return self.shell.run_cell(cell, store_history=False, silent=silent).success

            per_item = (lambda: self._why_not(step, options.condition)) if options.condition else None
            success = (self.loops.run(ns, step, options.foreach, python, run_body, per_item) if options.foreach
                       else run_body())
        finally:
            self._depth -= 1
        created = frozenset(n for n, v in ns.items() if before.get(n) != id(v) and not is_bookkeeping(n))
        self.session.record(RecordedCell(kind, cell, python, key, 0, self._cell_id, step, options, created))
        if not success:
            raise CellFailed(f"the %%{kind} cell failed")

    @cell_magic
    @arguments.documented_by(arguments.step)
    def step(self, line, cell):
        from ..plan.planner import check_step_name

        args = arguments.parse(arguments.step, line)
        check_step_name(args.name)
        options = arguments.step_options(args)
        self._warm()  # while the user works; %kale_run will need it
        why_not = self._why_not(args.name, options.condition) if options.condition and not options.foreach \
            else None  # with --foreach, the condition is evaluated per item
        why_not = why_not or self._after_held(args.name, options.after)
        if why_not:
            self._held[args.name] = why_not
        else:
            self._held.pop(args.name, None)
        self._record_and_run("step", cell, step=args.name, options=options, why_not=why_not)

    def _after_held(self, step: str, after: tuple[str, ...] | None) -> str | None:
        """Why a step after one that did not run in the kernel does not run either, as in the pipeline: its
        parents are its --after steps, else the step recorded before it (its parent in execution order)."""
        if after is None:
            steps = [c.step for c in self.session.ordered() if c.kind == "step"]
            earlier = steps[:steps.index(step)] if step in steps else steps
            after = tuple(s for s in earlier[-1:] if s != step)
        held = next((p for p in after if p in self._held), None)
        return None if held is None else f"step '{held}' before it did not run ({self._held[held]})"

    def _why_not(self, step: str, text: str) -> str | None:
        """Why an ``--if`` cell does not run its body in the kernel (None: it does), as the pipeline will say."""
        from ..plan.condition import parse_condition

        condition = parse_condition(text)
        ns = self.shell.user_ns
        unknown = [name for name in condition.names if name not in ns]
        try:
            if unknown:
                raise NameError(f"'{unknown[0]}' is not defined in the kernel; run the cells that produce it first")
            holds = condition.holds(ns)
        except Exception as exc:
            why = f'%%step {step}: --if "{text}" could not be evaluated: {type(exc).__name__}: {exc}'
            self.session.mark_stale(stale_key("step", step, self._cell_id), why + "; fix it and run the cell again")
            raise UsageError(why + ".") from None
        return None if holds else condition.why_false(ns)

    @cell_magic
    def imports(self, line, cell):
        """Imports every step runs first; their names are re-imported, never marshalled."""
        self._record_and_run("imports", cell)

    @cell_magic
    def functions(self, line, cell):
        """Functions and classes every step defines; re-created by code in each step."""
        self._record_and_run("functions", cell)

    @cell_magic
    def parameters(self, line, cell):
        """Pipeline parameters: 'name = literal' lines, overridable with %kale_run --param."""
        self._record_and_run("parameters", cell)

    @cell_magic
    def metrics(self, line, cell):
        """Pipeline metrics: one variable name per line, logged by the step that produces it."""
        self._record_and_run("metrics", cell, silent=True)
        self._show_metrics(cell)

    def _show_metrics(self, cell: str) -> None:
        """Every metric the cell names with its value, one line, not only the last expression's."""
        from ..errors import ValidationError
        from ..plan.analysis import metric_names

        try:
            names = metric_names(self.shell.transform_cell(cell))
        except ValidationError:
            return  # %kale_run names the bad line; the cell itself ran
        ns = self.shell.user_ns
        print("metrics: " + ", ".join(f"{name} = {ns[name]!r}" for name in names if name in ns))

    @cell_magic
    def skip(self, line, cell):
        """Run this cell in the notebook only; it never reaches the pipeline."""
        self._record_and_run("skip", cell)

    # the pipeline -------------------------------------------------------------------------
    @line_magic
    def kale_show(self, line):
        """Show the recorded pipeline: a graph in notebooks, text in a terminal (steps, edges, values)."""
        from IPython.display import display

        from ..panel.plan_view import PlanView
        from ..run.launch import RunRequest

        plan = self.plan()
        workspace = self._workspace()
        cached = workspace.kale.cache_entries.is_dir()
        notes = [self._notebook().describe()] + ([self._cache_check(RunRequest(), workspace, plan)] if cached else [])
        display(PlanView(plan, "\n".join(notes)))

    @line_magic
    def kale_reset(self, line):
        """Forget every recorded annotation (the cells' variables stay in the namespace)."""
        self.session.reset()
        self.loops.reset()
        self._held.clear()
        print("kale: all recorded annotations forgotten")

    @line_magic
    @arguments.documented_by(arguments.kale_run)
    def kale_run(self, line):
        return self.start(arguments.parse(arguments.kale_run, line))

    def start(self, args):
        """``%kale_run`` with parsed options ``args`` (the CLI's too): the one call of ``start_run``."""
        from .. import panel
        from ..history.store import RunStore
        from ..history.sweep import sweep
        from ..run import hooks
        from ..run.launch import Recording, start_run

        request = self._request(args)
        workspace = self._workspace()
        if args.sweep:
            return self._sweep(args, request, workspace)
        if args.cache_only_check:
            print(self._cache_check(request, workspace))
            return None
        cells = self._cells(workspace)
        store = RunStore.for_workspace(workspace.root)  # opening it marks runs of dead kernels interrupted
        sweep(workspace.kale, store)
        hook = hooks.resolve(self.on_run_end)
        self.last_run = start_run(request, workspace, Recording(cells, self._environment()),
                                  self._engine(request, workspace),
                                  listeners=[self._recorder(store, request, cells),
                                             panel.listener(self.panel, notebook_dir=workspace.root)])
        hooks.call_when_finished(self.last_run, hook)
        if self.last_run.status == "failed" and self.stop_on_failure:
            raise RunFailed(self.last_run) from self.last_run.failure
        return self.last_run

    def _sweep(self, args, request, workspace):
        """``%kale_run --sweep``: the grid checked at once, then one run per point (:mod:`kale_magic.run.sweep`)."""
        from .. import engines
        from ..history.store import RunStore
        from ..history.sweep import sweep as sweep_files
        from ..panel import pick_mode
        from ..panel.sweep import SweepPanel
        from ..run import hooks
        from ..run.grid import parse_grid
        from ..run.launch import Recording, start_run
        from ..run.sweep import new_sweep, run_sweep

        alone = [o for o, given in (("--schedule", args.schedule), ("--resume", args.resume is not None),
                                    ("--cache-only-check", args.cache_only_check), ("--compile-only", args.compile_only),
                                    ("--upload-only", args.upload_only)) if given]
        if alone:
            raise KaleError(f"--sweep runs every point of its grid now; leave out {alone[0]}.")
        if request.no_cache and not engines.get(request.engine).local:
            raise KaleError(f"--sweep on {request.engine} runs the steps the points share once through its own "
                            "cache, which --no-cache turns off; leave it out (%%step NAME --no-cache still reruns "
                            "a step that must).")
        plan = self.plan(request)  # the notebook's problems, all at once, before the grid's
        sweep = new_sweep(request, parse_grid(args.sweep, plan.parameters, request.params), plan)
        cells = self._cells(workspace)
        recording = Recording(cells, self._environment())
        store = RunStore.for_workspace(workspace.root)
        sweep_files(workspace.kale, store)
        hook = hooks.resolve(self.on_run_end)
        view = SweepPanel(sweep, self.panel if self.panel != "auto" else pick_mode()).start()

        def start(point_request):
            engine = self._engine(point_request, workspace)
            listeners = [self._recorder(store, point_request, cells), view]
            run = start_run(point_request, workspace, recording, engine, listeners=listeners)
            hooks.call_when_finished(run, hook)
            return run, engine

        self.last_run = run_sweep(sweep, start, self.max_parallel)
        if not request.background:
            try:
                sweep.wait()
            except KeyboardInterrupt:
                sweep.cancel()
                sweep.wait()
        failed = next((r for r in sweep.runs if r.status == "failed"), None)
        if failed is not None and self.stop_on_failure:
            raise RunFailed(failed) from failed.failure
        return sweep

    @line_magic
    @arguments.documented_by(arguments.kale_runs)
    def kale_runs(self, line):
        from ..history.store import RunStore
        from ..history.views import runs_view

        args = arguments.parse(arguments.kale_runs, line)
        workspace = self._workspace()
        # this notebook's pipeline: the one its last run ran (--pipeline may have named it), else its file's
        ran = next(iter(self._last_pipelines()), None)
        pipeline = None if args.all else ran or (workspace.pipeline_name if workspace.notebook else None)
        with RunStore.for_workspace(workspace.root) as store:
            self._record_scheduled(args, pipeline or workspace.pipeline_name, store)
            return runs_view(store, experiment=args.experiment, last=args.last, plot=args.plot,
                             compare=args.compare, pipeline=pipeline, short=True, sweep=args.sweep, by=args.by)

    def _record_scheduled(self, args, pipeline: str, store) -> None:
        """The runs a schedule started show in %kale_runs: the engine a host configures records them first."""
        from .. import engines

        settings = self._engine_settings()
        engine = engines.registry.choose(None, args, settings)
        note = engine.record_scheduled(settings.get(engine.name), pipeline, store)
        if note:
            print(note)

    @line_magic
    @arguments.documented_by(arguments.kale_debug)
    def kale_debug(self, line):
        from ..history.store import RunStore
        from ..run.debug import debug

        args = arguments.parse(arguments.kale_debug, line)
        workspace = self._workspace()
        pipelines = {workspace.pipeline_name} | self._last_pipelines()
        with RunStore.for_workspace(workspace.root) as store:
            loaded = debug(store, workspace.kale, pipelines, args.step, run_id=args.run, outputs=args.outputs,
                           failed=args.failed, item=args.item)
        self.shell.push(loaded.namespace())
        print(loaded.report())

    @line_magic
    @arguments.documented_by(arguments.kale_schedules)
    def kale_schedules(self, line):
        from .. import engines
        from ..history.store import RunStore

        args = arguments.parse(arguments.kale_schedules, line)
        actions = [(a, n) for a, n in (("pause", args.pause), ("resume", args.resume), ("delete", args.delete)) if n]
        if len(actions) > 1:
            raise KaleError("give one of --pause, --resume and --delete at a time.")
        action, name = actions[0] if actions else (None, None)
        workspace = self._workspace()
        settings = self._engine_settings()
        engine = engines.registry.choose(None, args, settings)
        with RunStore.for_workspace(workspace.root) as store:
            print(engine.schedules(args, settings.get(engine.name), args.pipeline or workspace.pipeline_name,
                                   action, name, store))

    @line_magic
    @arguments.documented_by(arguments.kale_snapshots)
    def kale_snapshots(self, line):
        from ..snapshot.manifest import snapshot_table

        args = arguments.parse(arguments.kale_snapshots, line)
        workspace = self._workspace()
        print(snapshot_table(workspace.kale.snapshots, args.last, workspace.root))

    @line_magic
    @arguments.documented_by(arguments.kale_cache)
    def kale_cache(self, line):
        from ..cache import clear, holdings

        args = arguments.parse(arguments.kale_cache, line)
        kale = self._workspace().kale
        print(clear(kale, older_than=args.older_than) if args.clear else holdings(kale))

    # the plan ---------------------------------------------------------------------------------
    def plan(self, request=None):
        """The plan ``%kale_run`` would make now (with the request's --param/--pipeline, if any)."""
        from ..plan.planner import build_plan

        workspace = self._workspace()
        return build_plan(self._cells(workspace), self._environment(),
                          overrides=request.params if request else None,
                          pipeline=(request and request.pipeline) or workspace.pipeline_name,
                          notebook_path=workspace.notebook, order_source=workspace.order_source)

    # helpers --------------------------------------------------------------------------------
    def _last_pipelines(self) -> set[str]:
        """The pipeline the latest %kale_run ran (a sweep's points all run the same one)."""
        runs = getattr(self.last_run, "runs", None) or ([self.last_run] if self.last_run else [])
        return {run.state.pipeline for run in runs[:1]}

    def _warm(self, key: str | None = None, python: str = "") -> None:
        """Have the warm worker import what the steps will (never blocks): Kale.preload and the
        modules the %%imports/%%functions cells (with cell ``key`` about to be ``python``) import,
        except local ones."""
        from ..plan.analysis import module_names

        code = {c.key: c.python for c in self.session.ordered() if c.kind in ("imports", "functions")}
        if key is not None:
            code[key] = python
        modules = module_names(code.values()) if self.preload_imports else []
        named = self._notebooks.named(self.notebook_path, self.shell.user_ns)  # a matched file is in cwd
        self.workers.warm([*self.preload, *modules], local={Path.cwd(), named[0].parent if named else Path.cwd()})

    def _request(self, args):
        from .. import engines
        from ..run.launch import RunRequest

        engine = engines.registry.choose(args.engine, args, self._engine_settings())
        if not engine.local and (args.cache_only_check or args.resume is not None):
            raise KaleError(f"--cache-only-check and --resume work with the local engine; on {engine.name} "
                            "its own cache decides which steps run (turn it off with --no-cache).")
        if args.cache_only_check and (args.only or args.from_step or args.to_step):
            raise KaleError("--cache-only-check shows what a whole run would reuse; leave out --only, --from and "
                            "--to (a partial run says before running which earlier result each left-out step reuses).")
        params = arguments.parse_params(args.param)
        return RunRequest(experiment=args.experiment, pipeline=args.pipeline, description=args.description,
                          engine=engine.name, host=args.host, params=params,
                          compile_only=args.compile_only, upload_only=args.upload_only,
                          no_snapshot=args.no_snapshot, background=args.background,
                          from_snapshot=args.from_snapshot, snapshot_max=args.snapshot_max,
                          no_cache=args.no_cache, resume=args.resume,
                          only=args.only, from_step=args.from_step, to_step=args.to_step,
                          schedule=self._schedule(args, engine.local, params))

    def _schedule(self, args, local: bool, params: dict):
        """--schedule and its options, checked before anything is uploaded; refused on the local engine."""
        from ..cron import crontab_line, parse_schedule

        given = [f"--{o}" for o, v in (("max-concurrency", args.max_concurrency), ("start", args.start),
                                       ("end", args.end)) if v is not None]
        catchup = args.catchup
        given += ["--catchup" if catchup else "--no-catchup"] if catchup is not None else []
        if args.schedule is None:
            if given:
                raise KaleError(f"{given[0]} only applies with --schedule CRON.")
            return None
        if args.compile_only or args.upload_only or args.background:
            raise KaleError("--schedule creates a recurring run on KFP; leave out --compile-only, --upload-only "
                            "and --background.")
        schedule = parse_schedule(args.schedule, args.max_concurrency, args.start, args.end,
                                  catchup=catchup is not False)
        if local:
            workspace = self._workspace()
            name = workspace.notebook.name if workspace.notebook else "NOTEBOOK.ipynb"
            raise KaleError("the local engine cannot schedule runs (schedules run on Kubeflow Pipelines: "
                            "--engine kfp); on this machine, add this line to your crontab (crontab -e): "
                            + crontab_line(schedule, workspace.root, name, params))
        return schedule

    def _step_cache(self, request, workspace, files=None):
        """The step cache of a run; its steps read files in place unless the engine gives them a snapshot."""
        from ..cache import LiveFiles, StepCache

        return StepCache(workspace.kale, request.pipeline or workspace.pipeline_name,
                         files or LiveFiles(workspace.root, workspace.kale),
                         use_cache=not request.no_cache, resume=request.resume)

    def _cache_check(self, request, workspace, plan=None) -> str:
        from ..cache import check_text
        from ..cache.workspace import preview

        plan = plan or self.plan(request)
        cache = self._step_cache(request, workspace, preview(workspace.kale, workspace.root, request))
        return check_text(cache.predict(plan, plan.parameters))

    def _notebook(self):
        """The notebook file (found from the frontend, or by its cells) and the name it goes by."""
        return self._notebooks.find(self.notebook_path, self.shell.user_ns, self.session.cells.values())

    def _workspace(self):
        from ..run.launch import Workspace

        notebook = self._notebook()
        root = notebook.path.parent if notebook.path else Path.cwd()
        return Workspace(root=root, notebook=notebook.path, cell_order=notebook.order, name=notebook.name,
                         order_source=f"notebook file {notebook.path}" if notebook.order else "execution order")

    def _cells(self, workspace):
        if self.session.stale:
            raise KaleError(next(iter(self.session.stale.values())))
        return self.session.ordered(workspace.cell_order or None)

    def _environment(self):
        from ..plan.planner import Environment

        return Environment.of(self.shell.user_ns, hidden=self.shell.user_ns_hidden)

    def _engine_settings(self) -> dict[str, dict]:
        """Each engine's settings, as values."""
        return {name: settings.trait_values(config=True) for name, settings in self.engine_settings.items()}

    @staticmethod
    def _recorder(store, request, cells):
        """The run store's listener for one run, holding its engine's words for a run whose kernel ends."""
        import os

        from .. import engines
        from ..history.store import step_hashes

        words = engines.get(request.engine).interrupted(os.getpid())
        return store.recorder(hashes=step_hashes(cells), interrupted=words)

    def _engine(self, request, workspace):
        from .. import engines
        from ..engines.base import EngineContext

        context = EngineContext(workers=self.workers, max_parallel=self.max_parallel,
                                step_cache=self._step_cache, warm=self._warm)
        return engines.get(request.engine).create(request, workspace, context=context,
                                                  settings=self._engine_settings().get(request.engine))
