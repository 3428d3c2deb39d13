"""What runs inside a step: execute its notebook with IPython semantics, load inputs, save outputs.

Both engines call :func:`run_step` in the step's own process (a forked worker
locally, the component's container on KFP).  The notebook's data cells call
:func:`load_inputs`, :func:`save_outputs` and :func:`log_metrics`, which look up
where values live in the active :class:`StepContext`.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from IPython.core.displayhook import DisplayHook
from IPython.core.displaypub import DisplayPublisher
from IPython.core.interactiveshell import InteractiveShell

from ..files import atomic_write
from ..layout import StepOutcome
from .capture import Capture

if TYPE_CHECKING:
    from .job import StepJob

CONTEXT_ENV = "KALE_STEP_CONTEXT"  # path of a context JSON, to run a step notebook by hand


@dataclass
class StepContext:
    """Where this step's values come from and go to."""

    step: str = ""
    inputs: dict[str, str | list[str]] = field(default_factory=dict)  # name -> saved value directory (a list
    # of directories: the items' values of a --foreach step, loaded as a list)
    producers: dict[str, str] = field(default_factory=dict)  # name -> step that saved it
    outputs: dict[str, str] = field(default_factory=dict)  # name -> directory to save to
    metrics_path: str | None = None
    backends: dict[str, str] = field(default_factory=dict)  # output -> the backend the plan chose (tried first)
    saved: dict[str, dict] = field(default_factory=dict)  # name -> marshal record, filled while running
    item: int | None = None  # which item of its --foreach clause this instance runs
    count: int | None = None  # how many items the clause's value has (known once VAR is bound)

    _active = None  # the context of the step running in this process

    def activate(self) -> "StepContext":
        StepContext._active = self
        return self

    @classmethod
    def current(cls) -> "StepContext":
        if cls._active is None:
            path = os.environ.get(CONTEXT_ENV)
            if not path:
                raise RuntimeError(f"no step context: set {CONTEXT_ENV} to a context JSON file to run a step "
                                   "notebook by hand")
            cls._active = cls(**json.loads(Path(path).read_text()))
        return cls._active

    def to_json(self) -> str:
        return json.dumps(asdict(self))


# the calls made by the data cells ------------------------------------------------------

def load_inputs(namespace: dict, names: list[str]) -> None:
    from .. import marshal

    ctx = StepContext.current()
    for name in names:
        where, step = ctx.inputs[name], ctx.producers.get(name)
        namespace[name] = ([marshal.load(w, name=name, step=step) for w in where] if isinstance(where, list)
                           else marshal.load(where, name=name, step=step))


def bind_item(namespace: dict, var: str, name: str) -> None:
    """``--foreach VAR in NAME``: bind VAR to this instance's item of NAME."""
    from ..items import items

    ctx = StepContext.current()
    values = items(namespace[name], ctx.step, name)
    ctx.count = len(values)
    namespace[var] = values[ctx.item]


def save_outputs(namespace: dict, names: list[str]) -> None:
    from .. import marshal
    from ..errors import MarshalError, UnmarshallableError
    from ..marshal.unmarshallable import refusal

    ctx = StepContext.current()
    for name in names:
        if name not in namespace:
            raise MarshalError(f"step '{ctx.step}' should produce '{name}' for later steps, but it is not "
                               "defined when the step ends; make sure every path through the step assigns it.")
        # Not fsynced: a partial value is never visible (atomic rename), and a crash-damaged one fails
        # its checksum on load, so the run (or the cache) recomputes it rather than using it.
        try:
            ctx.saved[name] = marshal.save(namespace[name], ctx.outputs[name], name=name, durable=False,
                                           prefer=ctx.backends.get(name))
        except UnmarshallableError as exc:
            raise UnmarshallableError(refusal(name, namespace[name], ctx.step, exc.reason)) from None


def log_metrics(namespace: dict, names: list[str]) -> None:
    ctx = StepContext.current()
    values = {name: _metric_value(namespace[name]) for name in names}
    if ctx.metrics_path:
        atomic_write(ctx.metrics_path, json.dumps(values))
    for name, value in values.items():
        print(f"metric {name} = {value}")


def _metric_value(value):
    if hasattr(value, "item") and callable(value.item):
        try:
            value = value.item()
        except (ValueError, TypeError):
            pass
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    return repr(value)


# running a notebook -------------------------------------------------------------------

def _rich(kind: str, data: dict, metadata: dict | None, **fields) -> tuple[dict, str | None]:
    """An nbformat output for a display or a result, and its line in the log."""
    output = {"output_type": kind, "data": dict(data), "metadata": dict(metadata or {}), **fields}
    return output, data.get("text/plain")


class _Publisher(DisplayPublisher):
    def publish(self, data, metadata=None, source=None, *, transient=None, update=False, **kwargs):
        self.shell.capture.add(*_rich("display_data", data, metadata))

    def clear_output(self, wait=False):
        self.shell.capture.clear()


class _DisplayHook(DisplayHook):
    def write_output_prompt(self):
        pass

    def write_format_data(self, format_dict, md_dict=None):
        self.shell.capture.add(*_rich("execute_result", format_dict, md_dict,
                                      execution_count=self.shell.execution_count))

    def finish_displayhook(self):
        pass


class StepShell(InteractiveShell):
    """An InteractiveShell whose outputs go into notebook cells and a log instead of a terminal."""

    display_pub_class = _Publisher
    displayhook_class = _DisplayHook
    prepared = None  # set in the worker server after warm-up; each forked child uses it once
    capture: Capture | None = None  # where the running cell's outputs go
    last_error: tuple | None = None  # (ename, evalue, traceback lines, text) of the running cell

    def _showtraceback(self, etype, evalue, stb):
        text = self.InteractiveTB.stb2text(stb)
        self.last_error = (etype.__name__, str(evalue), stb, text)
        self.capture.add({"output_type": "error", "ename": etype.__name__, "evalue": str(evalue),
                          "traceback": stb}, log_text=text)

    @contextmanager
    def _tee(self, channel):
        """IPython 9 copies every write into its history's outputs, keeping all of a step's output in
        memory and doubling the cost of a print; the step keeps its own (:class:`Capture`)."""
        yield

    def system(self, cmd):
        """``!cmd`` writes to the log file directly: what was printed before goes there first."""
        self.capture.sync()
        return super().system(cmd)


def new_shell() -> StepShell:
    """A fresh shell; in a forked worker child, the pristine one the server prepared (saves ~15 ms)."""
    prepared = StepShell.prepared
    if prepared is not None:
        StepShell.prepared = None
        return prepared
    from traitlets.config import Config

    config = Config()
    config.HistoryManager.enabled = False
    config.InteractiveShell.colors = "nocolor"
    config.InteractiveShell.xmode = "Context"
    from traitlets.config.configurable import MultipleInstanceError

    StepShell.clear_instance()  # IPython's display() finds the shell through the singleton
    try:
        shell = StepShell.instance(config=config)
    except MultipleInstanceError:  # run in-process beside another shell (tests): display() goes there
        shell = StepShell(config=config)
    return shell


def run_step(notebook, executed_path, log_path, context: StepContext) -> StepOutcome:
    """Run a step notebook (a path or a v4 dict) cell by cell; stop at the first error, like nbclient."""
    from ..ipynb import read_notebook, write_notebook

    started = time.time()
    nb = read_notebook(notebook) if isinstance(notebook, (str, os.PathLike)) else notebook
    context.activate()
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    shell = new_shell()
    capture = shell.capture = Capture(log_path)
    saved_streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = capture.stdout, capture.stderr
    try:
        outcome = _run_cells(shell, nb, capture)
    finally:
        sys.stdout, sys.stderr = saved_streams
        capture.close()
    outcome.duration = time.time() - started
    outcome.saved = dict(context.saved)
    if context.metrics_path and Path(context.metrics_path).exists():
        outcome.metrics = json.loads(Path(context.metrics_path).read_text())
    nb.setdefault("metadata", {}).setdefault("kale", {})["outcome"] = {
        "status": outcome.status, "error": outcome.error, "duration": round(outcome.duration, 3)}
    write_notebook(nb, executed_path)
    return outcome


def _run_cells(shell: StepShell, nb: dict, capture: Capture) -> StepOutcome:
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        capture.start_cell()
        shell.last_error = None
        result = shell.run_cell(cell["source"], store_history=True)
        cell["execution_count"] = shell.execution_count - 1
        cell["outputs"] = capture.finish_cell()
        if not result.success:
            if shell.last_error is None:  # failures IPython reports without a traceback
                error = result.error_in_exec or result.error_before_exec
                shell.last_error = (type(error).__name__, str(error), [], "".join(
                    traceback.format_exception(error)))
            ename, evalue, _, text = shell.last_error
            role = cell.get("metadata", {}).get("kale", {}).get("role", "step")
            line = f"{ename}: {evalue}" if evalue else ename
            if role in ("unmarshal", "marshal"):
                line = evalue or ename  # our own errors already name the variable and step
            return StepOutcome("failed", error=line, traceback=text)
    return StepOutcome("succeeded")


def warm_up() -> None:
    """Run a small step once, saving a value and loading it back, so that lazy imports, the
    marshal registry (entry points: ~30 ms) and IPython's first-run work are done in the worker
    server and every forked step inherits them."""
    import tempfile

    from .notebooks import RUNTIME_IMPORT

    sources = ["value = 1", f"{RUNTIME_IMPORT}\n_kale_rt.save_outputs(globals(), ['value'])",
               "_kale_rt.load_inputs(globals(), ['value'])"]
    nb = {"nbformat": 4, "nbformat_minor": 5, "metadata": {},
          "cells": [{"cell_type": "code", "id": f"warm-{i}", "metadata": {}, "source": source, "outputs": [],
                     "execution_count": None} for i, source in enumerate(sources)]}
    with tempfile.TemporaryDirectory() as tmp:
        value = str(Path(tmp) / "value")
        run_step(nb, Path(tmp) / "warm.ipynb", Path(tmp) / "warm.log",
                 StepContext(step="warm-up", inputs={"value": value}, outputs={"value": value}))
    StepContext._active = None
    StepShell.prepared = new_shell()
    from .reads import FileReads

    FileReads.install()  # the audit hook, the read hooks and their entry points: once for every forked step


# the entry point used by the local engine's workers -------------------------------------------

def run_job(job: StepJob) -> int:
    """Run one step job; write its outcome through the run's folder.

    The outcome also says which workspace files the step read (its cache key covers them).
    """
    from .reads import FileReads

    run = job.run_dir
    try:
        with FileReads(job.cwd) as reads:
            outcome = run_step(job.notebook, run.executed(job.name), run.log(job.name), job.context())
        outcome.reads = reads.report()
    except BaseException as exc:  # report, don't lose, a failure of the runtime itself
        outcome = StepOutcome("failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
    run.write_outcome(job.name, outcome)
    return 0 if outcome.status == "succeeded" else 1
