"""Execute an annotated notebook in a fresh kernel, as a frontend would, and collect its runs.

The cells go to a real IPython kernel one by one with their cell ids (as
JupyterLab sends them), so the magics record exactly what they record in a
frontend.  Like "Run All", execution stops at the first cell that fails (a failed
run is one).  A hidden first cell notes every ``Run`` that ``%kale_run`` returns
(or stops at) and a hidden last cell, run even after a failure, waits for them and
prints their outcome as one JSON line; both are removed from the executed notebook
handed back.  What is echoed is the runs' progress; other cells' outputs are
labelled with their cell's number.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass, field

from nbclient import NotebookClient

RESULT_MARKER = "__kale_magic_runs__ "
RUN_FAILED = "RunFailed"  # the error a failed run stops the notebook with: a run outcome, not a cell error

# Runs in the kernel: progress as text lines (not a widget), and remember what each
# %kale_run returns, however it was written.
_SETUP = """\
def _kale_cli_watch():
    shell = get_ipython()
    shell.config.Kale.panel = "text"
    runs, run_line_magic = [], shell.run_line_magic
    def stops():
        return getattr(shell.magics_manager.registry.get("Kale"), "stop_on_failure", True)
    def watched(name, line, _stack_depth=1):
        try:
            result = run_line_magic(name, line, _stack_depth=_stack_depth + 1)
        except Exception as error:
            if name == "kale_run" and getattr(error, "run", None) is not None:
                runs.append((error.run, stops()))
            raise
        if name == "kale_run" and result is not None:
            runs.append((result, stops()))
        return result
    shell.run_line_magic = watched
    return runs
_kale_cli_runs = _kale_cli_watch()
del _kale_cli_watch
"""

_REPORT = """\
def _kale_cli_report(runs):
    import json
    def plain(value):
        value = value.item() if hasattr(value, "item") else value
        return value if isinstance(value, (bool, int, float, str)) else repr(value)
    out = []
    for run, stops in runs:
        run.wait()
        for one in getattr(run, "runs", None) or [run]:  # a Sweep: each point's run
            out.append({"id": one.id, "status": one.status, "stops": stops,
                        "metrics": {k: plain(v) for k, v in dict(one.metrics).items()}})
    print(%r + json.dumps(out))
_kale_cli_report(_kale_cli_runs)
""" % RESULT_MARKER


@dataclass
class RunOutcome:
    id: str
    status: str
    metrics: dict
    stops: bool = True  # Kale.stop_on_failure when it ran: does its failure stop the notebook


@dataclass
class Execution:
    notebook: object  # the executed nbformat notebook, without the hidden cells
    runs: list[RunOutcome] = field(default_factory=list)
    error: str = ""  # one line when a cell raised (a failed run is in ``runs`` instead)


def prepare(nb, run_options: str):
    """A copy of ``nb`` that loads the extension and runs the pipeline with ``run_options`` added.

    Options go at the end of every ``%kale_run`` line, so the command line wins over
    what the notebook says; a notebook without one gets one at the end.
    """
    import copy

    from nbformat.v4 import new_code_cell

    from ..source.convert import add_load_ext
    from ..source.static import KALE_RUN

    nb = copy.deepcopy(nb)
    add_load_ext(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    extra = " " + run_options if run_options else ""
    if any(KALE_RUN.search(c.source) for c in code):
        for cell in code:
            cell.source = KALE_RUN.sub(lambda m: m.group(0) + extra, cell.source)
    else:
        nb.cells.append(new_code_cell("run = %kale_run" + extra))
    return nb


def execute(nb, workdir, env: dict | None = None, echo=sys.stdout) -> Execution:
    """Run every cell of ``nb`` in a new kernel started in ``workdir``; never raises for cell errors."""
    from jupyter_client.kernelspec import NoSuchKernel
    from nbclient.exceptions import DeadKernelError
    from nbformat.v4 import new_code_cell

    from ..errors import EngineError

    hidden = [new_code_cell(_SETUP), new_code_cell(_REPORT)]
    nb.cells.insert(0, hidden[0])
    nb.cells.append(hidden[1])
    client = _Client(nb, echo=echo, report=hidden[1], timeout=None, kernel_name="python3",
                     resources={"metadata": {"path": str(workdir)}},
                     # the kernel's startup notices would drown the command's own stderr
                     extra_arguments=["--IPKernelApp.log_level=ERROR"])
    error = ""
    try:
        client.execute(env=dict(os.environ) if env is None else env)
        if client.failure is not None and client.failure[1].ename != RUN_FAILED:
            error = _cell_error(client, *client.failure)
    except NoSuchKernel:
        raise EngineError("no 'python3' Jupyter kernel is installed for this Python; "
                          "install one with: python -m ipykernel install --user") from None
    except DeadKernelError:
        error = f"the kernel died while running cell {client.current_index} (out of memory?)"
    runs = _read_runs(nb.cells[-1])
    nb.cells = [c for c in nb.cells if c not in hidden]
    return Execution(nb, runs, error)


def _cell_error(client, index: int, exc) -> str:
    """Name the failing cell by its position (hidden setup cell excluded) and first line."""
    first = client.nb.cells[index].source.strip().split("\n", 1)[0][:60]
    return f"cell {index} ({first}) raised {exc.ename}: {exc.evalue}"


def _read_runs(cell) -> list[RunOutcome]:
    for output in cell.get("outputs", []):
        for line in output.get("text", "").splitlines():
            if line.startswith(RESULT_MARKER):
                return [RunOutcome(**run) for run in json.loads(line[len(RESULT_MARKER):])]
    return []


class _Client(NotebookClient):
    """nbclient that sends cell ids like JupyterLab, stops at the first failing cell (still running the
    hidden ``report`` cell) and echoes outputs as they arrive."""

    def __init__(self, nb, echo, report, **kwargs):
        super().__init__(nb, **kwargs)
        self.echo = echo
        self.report = report
        self.current_index = 0
        self.failure: tuple[int, object] | None = None  # (cell index, CellExecutionError)
        self._cell_id = None
        self._label = ""
        self._line_start = True  # the echo's last character ended a line

    async def async_start_new_kernel_client(self):
        kc = await super().async_start_new_kernel_client()
        kc.execute = self._execute_with_cell_id
        return kc

    def _execute_with_cell_id(self, code, silent=False, store_history=True,
                              user_expressions=None, allow_stdin=None, stop_on_error=True):
        content = {"code": code, "silent": silent, "store_history": store_history,
                   "user_expressions": user_expressions or {}, "allow_stdin": False,
                   "stop_on_error": stop_on_error}
        metadata = {"cellId": self._cell_id} if self._cell_id else {}
        msg = self.kc.session.msg("execute_request", content, metadata=metadata)
        self.kc.shell_channel.send(msg)
        return msg["header"]["msg_id"]

    async def async_execute_cell(self, cell, cell_index, execution_count=None,
                                 store_history=True):
        from nbclient.exceptions import CellExecutionError

        from ..source.static import KALE_RUN

        if self.failure is not None and cell is not self.report:
            return cell  # "Run All" stops at the failure; only the report still runs
        self.current_index, self._cell_id = cell_index, cell.get("id")
        runs = cell is self.report or KALE_RUN.search(cell.source or "")
        self._label = "" if runs else f"[cell {cell_index}] "  # runs print their progress themselves
        if not self._line_start:  # the previous cell's last line had no end
            self._echo("\n")
        try:
            return await super().async_execute_cell(cell, cell_index, execution_count, store_history)
        except CellExecutionError as exc:
            self.failure = (cell_index, exc)
            return cell

    def output(self, outs, msg, display_id, cell_index):
        out = super().output(outs, msg, display_id, cell_index)
        if out is not None and self.echo is not None:
            self._echo(_as_text(out))
        return out

    def _echo(self, text: str) -> None:
        """Write ``text``, labelling each line where it starts: a print can arrive in several stream
        messages ('ids:' then ' 1 2 3\n'), and only the first begins the line."""
        if not text or self.echo is None:
            return
        for piece in text.splitlines(True):
            self.echo.write(self._label + piece if self._line_start else piece)
            self._line_start = piece.endswith("\n")
        self.echo.flush()


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _as_text(out) -> str:
    """What a terminal shows for one output; widgets and the hidden report show nothing."""
    if out.output_type == "stream":
        return "" if out.text.startswith(RESULT_MARKER) else out.text
    if out.output_type == "error":  # a failed run's error only points at the progress shown above it
        return "" if out.ename == RUN_FAILED else _ANSI.sub("", "\n".join(out.traceback)) + "\n"
    data = out.get("data", {})
    if "application/vnd.jupyter.widget-view+json" in data:
        return ""
    text = data.get("text/plain", "")
    return text + "\n" if text else ""
