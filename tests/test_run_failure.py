"""A failed run stops the notebook like a failed cell, after its panel showed what happened, once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cli_helpers import printed

from kale_magic.errors import KaleError, RunFailed

ROOT = Path(__file__).resolve().parents[1]
# 'boom' reads a file that is there while the cells run and gone when the pipeline runs
FAILING = ["open('input.txt', 'w').write('1')",
           "%%step make\nxs = [1, 2]",
           "%%step boom\ny = int(open('input.txt').read())",
           "%%step after\nz = y + 1",
           "import os; os.remove('input.txt')"]
ERROR = "FileNotFoundError: [Errno 2] No such file or directory: 'input.txt'"


def test_a_failed_step_raises_after_the_panel_and_the_run_stays_reachable(kernel, capsys):
    kernel.run("%config Kale.panel = 'text'")
    kernel.cells(*FAILING)
    capsys.readouterr()
    error = kernel.error("%kale_run")
    printed = capsys.readouterr().out
    assert isinstance(error, RunFailed) and error.__cause__ is None
    assert str(error) == f"step 'boom' failed: {ERROR}"
    run = error.run
    assert kernel.magics.last_run is run
    assert run.status == "failed" and run.steps["after"].status == "skipped"
    assert run.steps["boom"].error == ERROR and run.notebook("boom").exists()
    assert printed.count(ERROR) == 1  # the step's row; the traceback under it leaves that line out
    assert "FileNotFoundError                         Traceback" in printed
    assert "✗ Run       failed" in printed and "1 of 3 steps failed (boom), 1 skipped" in printed
    rendered = error._render_traceback_()
    assert len(rendered) == 1 and f"run {run.id} failed (shown above)" in rendered[0]
    assert "FileNotFoundError" not in rendered[0] and "kale_magic.last_run()" in rendered[0]


def test_stop_on_failure_off_returns_the_failed_run(kernel):
    kernel.run("%config Kale.stop_on_failure = False")
    kernel.cells(*FAILING)
    run = kernel.run("%kale_run")
    assert run.status == "failed" and kernel.magics.last_run is run


def test_a_failed_task_stops_the_notebook_with_its_error_as_the_cause(kernel, tmp_path):
    (tmp_path / "big.bin").write_bytes(b"x" * 20_000)
    kernel.cells(*FAILING[1:2])
    error = kernel.error("%kale_run --snapshot-max 10K")
    assert isinstance(error, RunFailed) and isinstance(error.__cause__, KaleError)
    assert "big.bin" in str(error) and str(error) == error.run.state.tasks["Snapshot"].message
    assert error.run.state.tasks["Run"].status == "skipped"


def test_a_background_run_that_fails_does_not_raise_later(kernel):
    kernel.cells(*FAILING)
    run = kernel.run("%kale_run --background")
    assert run.wait(120).status == "failed"
    assert kernel.run("1 + 1") == 2


def notebook_client(tmp_path, *cells, **options):
    from nbclient import NotebookClient
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook(cells=[new_code_cell(c) for c in ["%load_ext kale_magic", *FAILING, *cells]])
    client = NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}},
                            **options)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return nb, lambda: client.execute(env=env)


@pytest.mark.slow  # a Jupyter kernel
def test_run_all_in_a_real_kernel_stops_at_the_failed_run(tmp_path):
    """nbclient executes the cells like a frontend's Run All: the cells after the failed run never run."""
    from nbclient.exceptions import CellExecutionError

    nb, execute = notebook_client(tmp_path, "run = %kale_run", "open('after.txt', 'w').write('ran')")
    with pytest.raises(CellExecutionError) as failure:
        execute()
    assert failure.value.ename == "RunFailed"
    assert not (tmp_path / "after.txt").exists()
    run_cell = nb.cells[6]
    errors = [o for o in run_cell.outputs if o.output_type == "error"]
    assert len(errors) == 1 and errors[0].traceback[0].startswith("Kale: run ")
    panel = "".join(str(o.get("data", {}).get("text/html", "")) + str(o.get("text", "")) for o in run_cell.outputs)
    assert "No such file or directory" in panel  # the panel, shown before the error, says what happened


@pytest.mark.slow  # a Jupyter kernel
def test_in_a_real_kernel_the_failed_run_is_kale_magic_last_run(tmp_path):
    nb, execute = notebook_client(tmp_path, "run = %kale_run",
                                  "import kale_magic\nfailed = kale_magic.last_run()\n"
                                  "print(failed.status, failed.steps['boom'].status, 'run' in dir())",
                                  allow_errors=True)
    execute()
    assert printed(nb.cells[-1]) == "failed failed False\n"
