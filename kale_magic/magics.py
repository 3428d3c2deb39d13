"""The ``Kale`` magics: annotation cell magics that record themselves and run the cell,
and the line magics that show, reset and run the pipeline.

Bodies stay short: parse the arguments, record, run.  Analysis lives in
``analysis``/``planner``, running in ``launch`` and the engines.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.error import UsageError
from IPython.core.magic_arguments import argument, magic_arguments
from traitlets import Bool, CaselessStrEnum, Int, List, Unicode

from .errors import KaleError
from .session import RecordedCell, Session, StepOptions, cell_key


# Names IPython itself sets while running a cell (output and input caches).
IPYTHON_NAMES = re.compile(r"^(_+|_i+|_i?\d+|_ih|_oh|_dh|_exit_code|__\w+__)$")


class CellFailed(Exception):
    """Marks an annotated cell as failed after IPython already showed the error."""

    def _render_traceback_(self):
        return []


def _names(text: str) -> tuple[str, ...]:
    """``--after a,b``; ``--after ""`` means no parents."""
    return tuple(n.strip() for n in text.split(",") if n.strip())


def parse_argstring(magic, line: str):
    """Like IPython's ``parse_argstring``, but with POSIX quoting, so ``--param "s=it's"`` works."""
    import shlex

    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise UsageError(f"{exc} in: {line.strip()}; balance the quotes around values with spaces.") from None
    return magic.parser.parse_args(words)


@magics_class
class Kale(Magics):
    """kale-magic: annotate cells, then ``%kale_run`` them as a pipeline."""

    notebook_path = Unicode(None, allow_none=True, help="The notebook file, when the frontend does not say "
                            "(Jupyter servers and VS Code do).").tag(config=True)
    max_parallel = Int(8, help="How many steps the local engine runs at the same time.").tag(config=True)
    preload = List(Unicode(), help="Modules the local engine's worker imports once, so that steps which "
                   "import them start fast (numpy is always preloaded), e.g. ['pandas', 'sklearn'].").tag(config=True)
    panel = CaselessStrEnum(("auto", "widget", "html", "text"), "auto", help="How runs show progress: ipywidgets, "
                            "an HTML display updated in place, or text lines ('auto' picks).").tag(config=True)

    # Kubeflow Pipelines (engines/kfp.py); host and UI also from KF_PIPELINES_ENDPOINT / KF_PIPELINES_UI_ENDPOINT
    host = Unicode(None, allow_none=True, help="KFP API endpoint; when set, %kale_run runs there.").tag(config=True)
    ui_host = Unicode(None, allow_none=True, help="KFP UI address for links (default: the host).").tag(config=True)
    namespace = Unicode(None, allow_none=True, help="KFP namespace (multi-user installations).").tag(config=True)
    base_image = Unicode("python:%d.%d" % sys.version_info[:2], help="Image of the KFP steps (default: stock Python of the kernel's "
                         "version; the steps install what they import).").tag(config=True)
    install_packages = Bool(True, help="KFP steps install, once per run, what they import (pinned to this "
                            "kernel's versions) and this kale-magic; False: the image holds them all "
                            "(kale-magic image builds one).").tag(config=True)
    pip_index_urls = List(Unicode(), help="Package indexes KFP steps install from (the first is the index, "
                          "the others extra ones); default: the image's pip configuration.").tag(config=True)
    run_as_user = Int(65534, allow_none=True, help="User id KFP pods run as (group 0, HOME in /tmp); None: the "
                      "image's user.").tag(config=True)
    packages = List(Unicode(), help="More pip packages each KFP step installs at start (default none).").tag(config=True)
    caching = Bool(True, help="Let KFP reuse the results of unchanged steps.").tag(config=True)
    volumes = List(Unicode(), help="PVCs mounted in every KFP step: 'pvc-name:/mount/path'.").tag(config=True)
    secrets = List(Unicode(), help="Secrets as env vars in KFP steps: 'secret:KEY=ENV[,KEY=ENV]'.").tag(config=True)
    accelerator = Unicode("nvidia.com/gpu", help="Accelerator type of %%step --gpu on KFP.").tag(config=True)
    pipeline_root = Unicode(None, allow_none=True, help="Object store where KFP keeps the runs' artifacts and the "
                            "steps read the workspace snapshot, e.g. 'minio://mlpipeline/v2/artifacts' or "
                            "'s3://bucket/prefix' (credentials: AWS_* or MINIO_* variables), or a folder for "
                            "kfp.local; unset: KFP steps get no snapshot and run.load cannot read KFP results."
                            ).tag(config=True)

    def __init__(self, shell):
        super().__init__(shell)
        self.session = Session()
        self._cell_id: str | None = None
        self._depth = 0
        self._workers = None

    # lifecycle --------------------------------------------------------------------------
    def attach(self) -> None:
        self.shell.events.register("pre_run_cell", self._pre_run_cell)

    def detach(self) -> None:
        self.shell.events.unregister("pre_run_cell", self._pre_run_cell)
        if self._workers is not None:
            self._workers.close()

    def _pre_run_cell(self, info) -> None:
        if self._depth == 0:  # the frontend's cell, not one we run from inside a magic
            self._cell_id = getattr(info, "cell_id", None)

    # recording ------------------------------------------------------------------------------
    def _record_and_run(self, kind: str, cell: str, step: str | None = None,
                        options: StepOptions = StepOptions()):
        cell = cell.rstrip("\n")
        python = self.shell.transform_cell(cell)
        key = cell_key(kind, step, self._cell_id, cell)
        ns = self.shell.user_ns
        before = {name: id(value) for name, value in ns.items()}
        self._depth += 1
        try:
            result = self.shell.run_cell(cell, store_history=False)
        finally:
            self._depth -= 1
        created = frozenset(n for n, v in ns.items() if before.get(n) != id(v) and not IPYTHON_NAMES.match(n))
        self.session.record(RecordedCell(kind, cell, python, key, 0, self._cell_id, step, options, created))
        if not result.success:
            raise CellFailed(f"the %%{kind} cell failed")

    @magic_arguments()
    @argument("name", help="Step name: lowercase letters, digits, '-' or '_'.")
    @argument("--after", type=_names, default=None,
              help="Comma-separated steps this one runs after (default: the previous step; '' for none).")
    @argument("--cpu", help="CPU request and limit on KFP, e.g. 500m or 2.")
    @argument("--memory", help="Memory request and limit on KFP, e.g. 2Gi.")
    @argument("--gpu", type=int, help="Number of GPUs on KFP.")
    @argument("--retries", type=int, help="How many times KFP retries the step.")
    @argument("--timeout", type=int, help="Seconds after which the step is stopped.")
    @argument("--image", help="Container image for this step on KFP.")
    @argument("--no-cache", action="store_true", help="Always run this step, never reuse a cached result.")
    @cell_magic
    def step(self, line, cell):
        """Mark this cell as (part of) a pipeline step, and run it."""
        from .planner import check_step_name

        args = parse_argstring(self.step, line)
        check_step_name(args.name)
        options = StepOptions(after=args.after, cpu=args.cpu, memory=args.memory, gpu=args.gpu,
                              retries=args.retries, timeout=args.timeout, image=args.image,
                              no_cache=args.no_cache)
        self._worker_server().start()  # warm it up while the user works; %kale_run will need it
        self._record_and_run("step", cell, step=args.name, options=options)

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
        self._record_and_run("metrics", cell)

    @cell_magic
    def skip(self, line, cell):
        """Run this cell in the notebook only; it never reaches the pipeline."""
        self._record_and_run("skip", cell)

    # the pipeline -------------------------------------------------------------------------
    @line_magic
    def kale_show(self, line):
        """Print the recorded pipeline: steps, edges and the values that flow on each edge."""
        from .launch import RunRequest
        from .report import plan_text

        plan = self._plan()
        print(plan_text(plan))
        workspace = self._workspace()
        if (workspace.kale_dir / "cache").is_dir():
            print(self._cache_check(RunRequest(), workspace, plan))

    @line_magic
    def kale_reset(self, line):
        """Forget every recorded annotation (the cells' variables stay in the namespace)."""
        self.session.reset()
        print("kale: all recorded annotations forgotten")

    @magic_arguments()
    @argument("--experiment", default="Default", help="Experiment that groups runs for comparison.")
    @argument("--pipeline", help="Pipeline name (default: the notebook's file name).")
    @argument("--description", default="", help="Pipeline description.")
    @argument("--engine", choices=("local", "kfp"), help="Where to run (default: kfp when a KFP host is set).")
    @argument("--host", help="KFP API endpoint; implies --engine kfp.")
    @argument("--upload-only", action="store_true", help="KFP: compile and upload the pipeline, do not run.")
    @argument("--param", action="append", default=[], metavar="NAME=VALUE",
              help="Override a %%%%parameters value (repeatable).")
    @argument("--compile-only", action="store_true", help="Write the step notebooks (and KFP YAML), do not run.")
    @argument("--no-snapshot", action="store_true", help="Do not snapshot the workspace.")
    @argument("--from-snapshot", metavar="ID", help="Run on the files of an earlier snapshot (%%kale_snapshots).")
    @argument("--snapshot-max", metavar="SIZE", help="Refuse a snapshot above this size, e.g. 10G (default 5G).")
    @argument("--background", action="store_true", help="Return at once; use run.wait().")
    @argument("--no-cache", action="store_true", help="Run every step; reuse no cached result.")
    @argument("--cache-only-check", action="store_true",
              help="Only show which steps would be reused from the cache and why the others would run.")
    @argument("--resume", nargs="?", const="", default=None, metavar="RUN_ID",
              help="Reuse the steps that succeeded in RUN_ID (default: the last failed run) and are unchanged.")
    @line_magic
    def kale_run(self, line):
        """Validate, snapshot, compile, upload and run the annotated notebook as a pipeline."""
        from . import panel
        from .launch import RunRequest, launch
        from .store import RunStore, step_hashes

        args = parse_argstring(self.kale_run, line)
        request = RunRequest(experiment=args.experiment, pipeline=args.pipeline, description=args.description,
                             engine=self._engine_name(args), host=args.host,
                             params=self._params(args.param), compile_only=args.compile_only,
                             upload_only=args.upload_only,
                             no_snapshot=args.no_snapshot, background=args.background,
                             from_snapshot=args.from_snapshot, snapshot_max=args.snapshot_max,
                             no_cache=args.no_cache, resume=args.resume)
        if request.engine != "local" and (args.cache_only_check or args.resume is not None):
            raise KaleError("--cache-only-check and --resume work with the local engine; on KFP the cluster's "
                            "cache decides which steps run (turn it off with --no-cache).")
        workspace = self._workspace()
        if args.cache_only_check:
            print(self._cache_check(request, workspace))
            return None
        cells = self._cells(workspace)
        recorder = RunStore.for_workspace(workspace.root).recorder(hashes=step_hashes(cells))
        return launch(request, cells, self._environment(), workspace, self._engine(request, workspace),
                      listeners=[recorder, panel.listener(self.panel, notebook_dir=workspace.root)])

    @magic_arguments()
    @argument("--experiment", help="Only the runs of this experiment.")
    @argument("--last", type=int, help="Only the N most recent runs.")
    @argument("--plot", metavar="METRIC", help="Also plot this metric over the runs.")
    @argument("--compare", nargs=2, metavar=("RUN_A", "RUN_B"), help="What changed between two runs.")
    @line_magic
    def kale_runs(self, line):
        """The recorded runs side by side (parameters, metrics), a metric's plot, or two runs compared."""
        from .runs_view import runs_view
        from .store import RunStore

        args = parse_argstring(self.kale_runs, line)
        with RunStore.for_workspace(self._workspace().root) as store:
            return runs_view(store, experiment=args.experiment, last=args.last, plot=args.plot,
                             compare=args.compare)

    @magic_arguments()
    @argument("-n", "--last", type=int, default=20, help="How many of the newest snapshots to list.")
    @line_magic
    def kale_snapshots(self, line):
        """List the workspace snapshots %kale_run took, oldest first (reuse one with --from-snapshot ID)."""
        from .snapshot.task import snapshot_table

        args = parse_argstring(self.kale_snapshots, line)
        print(snapshot_table(self._workspace().kale_dir / "snapshots", args.last))

    @magic_arguments()
    @argument("--clear", action="store_true", help="Forget cached step results and delete saved values.")
    @argument("--older-than", type=float, metavar="DAYS", help="With --clear: only what is older than DAYS.")
    @line_magic
    def kale_cache(self, line):
        """Show the step cache of this notebook's folder, or clear it to free disk (run history stays)."""
        from .cache import CacheIndex, clear

        args = parse_argstring(self.kale_cache, line)
        workspace = self._workspace()
        if args.clear:
            print(clear(workspace.root, older_than=args.older_than))
        else:
            entries = CacheIndex(workspace.kale_dir).entries()
            print(f"kale: {len(entries)} cached step results in {workspace.kale_dir / 'cache'}; "
                  "%kale_cache --clear [--older-than DAYS] frees their disk")

    # helpers --------------------------------------------------------------------------------
    def _step_cache(self, request, workspace):
        from .cache import StepCache

        return StepCache(workspace.kale_dir, request.pipeline or workspace.pipeline_name,
                         use_cache=not request.no_cache, resume=request.resume)

    def _cache_check(self, request, workspace, plan=None) -> str:
        from .cache import check_text
        from .cache.workspace import preview

        plan = plan or self._plan(workspace, request)
        cache = self._step_cache(request, workspace)
        cache.snapshot = preview(workspace.root, workspace.kale_dir / "snapshots", workspace.notebook, request)
        return check_text(cache.predict(plan, plan.parameters))

    def _workspace(self):
        from .launch import Workspace
        from .notebook_file import cell_order, find_notebook

        notebook = find_notebook(self.notebook_path, self.shell.user_ns)
        order = cell_order(notebook)
        if not any(c.cell_id in order for c in self.session.cells.values()):
            order = {}  # the file does not list these cells (not saved yet): execution order
        root = notebook.parent if notebook else Path.cwd()
        return Workspace(root=root, notebook=notebook, cell_order=order,
                         order_source=f"notebook file {notebook}" if order else "execution order")

    def _cells(self, workspace):
        return self.session.ordered(workspace.cell_order or None)

    def _environment(self):
        import builtins

        from .planner import Environment

        ignored = set(self.shell.user_ns_hidden) | set(dir(builtins)) | {"get_ipython", "display"}
        return Environment(namespace=self.shell.user_ns, ignored=frozenset(ignored))

    def _plan(self, workspace=None, request=None):
        """The plan ``%kale_run`` would make now (with the request's --param/--pipeline, if any)."""
        from .planner import build_plan

        workspace = workspace or self._workspace()
        return build_plan(self._cells(workspace), self._environment(),
                          overrides=request.params if request else None,
                          pipeline=(request and request.pipeline) or workspace.pipeline_name,
                          notebook_path=workspace.notebook, order_source=workspace.order_source)

    def _engine_name(self, args) -> str:
        """--host and --upload-only mean KFP; else --engine; else KFP when a host is configured."""
        import os

        if args.host or args.upload_only:
            return "kfp"
        return args.engine or ("kfp" if self.host or os.environ.get("KF_PIPELINES_ENDPOINT") else "local")

    def _engine(self, request, workspace):
        if request.engine == "kfp":
            from .engines.kfp import CONFIG, KfpEngine

            config = {name: getattr(self, name) for name in CONFIG}
            config["caching"] = config["caching"] and not request.no_cache
            return KfpEngine(request.host, config=config)
        from .engines.local import LocalEngine

        return LocalEngine(self._worker_server(), max_parallel=self.max_parallel,
                           cache=self._step_cache(request, workspace))

    def _worker_server(self):
        from .engines.workers import PRELOAD, WorkerServer

        if self._workers is None:
            self._workers = WorkerServer(PRELOAD + tuple(self.preload))
        return self._workers

    @staticmethod
    def _params(pairs: list[str]) -> dict[str, str]:
        out = {}
        for pair in pairs:
            name, sep, value = pair.partition("=")
            if not sep or not name.strip():
                raise KaleError(f"--param {pair!r}: write it as NAME=VALUE, e.g. --param n=100")
            out[name.strip()] = value
        return out
