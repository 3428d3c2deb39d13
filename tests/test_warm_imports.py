"""The warm worker preloads what the notebook imports: steps start with the %%imports modules loaded.

A probe module outside the workspace writes the pid of every process that imports it to a
side channel, so a test counts who imported it (the kernel, the worker, each step) rather than
timing anything.  The probe can be made slow to import everywhere except in the kernel.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from kale_magic.engines.local.workers import WorkerServer

PROBE = """\
import os, time
with open(os.environ["KALE_TEST_LOG"], "a") as log:
    log.write(f"{os.getpid()}\\n")
if os.getpid() != int(os.environ["KALE_TEST_KERNEL_PID"]):
    time.sleep(float(os.environ.get("KALE_TEST_PROBE_SLEEP", "0")))
"""


@pytest.fixture
def probe(tmp_path_factory, monkeypatch):
    """An importable ``kale_probe`` module (and ``kale_probe_b``) outside the workspace; returns the log."""
    libs = tmp_path_factory.mktemp("libs")
    for name in ("kale_probe", "kale_probe_b"):
        (libs / f"{name}.py").write_text(PROBE)
    log = tmp_path_factory.mktemp("side-channel") / "imports.log"
    monkeypatch.syspath_prepend(str(libs))
    for name in ("kale_probe", "kale_probe_b", "helpers"):  # imported afresh by each test's kernel
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setenv("KALE_TEST_LOG", str(log))
    monkeypatch.setenv("KALE_TEST_KERNEL_PID", str(os.getpid()))
    monkeypatch.setenv("KALE_TEST_LIBS", str(libs))
    return log


def importers(log: Path) -> list[int]:
    return [int(line) for line in log.read_text().split()] if log.exists() else []


@pytest.fixture
def own_workers(kernel):
    """This kernel's own worker server (the shared one would keep modules other tests preloaded)."""
    server = WorkerServer()
    kernel.magics.workers = server
    yield server
    server.close()


def chain(kernel, n=3):
    kernel.run("%%step s0\nv = 0")
    for i in range(1, n):
        kernel.run(f"%%step s{i}\nv = v + 1")


def test_steps_start_with_the_imports_preloaded(kernel, probe, own_workers):
    kernel.run("%%imports\nimport kale_probe\nimport json")
    assert importers(probe) == [os.getpid()]  # the kernel ran the cell
    chain(kernel)
    assert own_workers.wait_ready(120)
    run = kernel.run("%kale_run --no-snapshot")
    assert run.status == "succeeded" and run.load("v") == 2
    worker = own_workers.pid
    assert importers(probe) == [os.getpid(), worker]  # once by the worker, by no step
    assert "kale_probe" in own_workers.modules


def test_a_run_while_the_worker_warms_waits_for_it_instead_of_importing_cold(kernel, probe, own_workers,
                                                                               monkeypatch, capsys):
    monkeypatch.setenv("KALE_TEST_PROBE_SLEEP", "3")  # slow everywhere but in the kernel
    kernel.run("%%imports\nimport kale_probe")
    assert not own_workers.ready  # recording the cell did not wait for the worker
    chain(kernel)
    run = kernel.run("%kale_run --no-snapshot")
    assert run.status == "succeeded" and run.load("v") == 2
    assert importers(probe) == [os.getpid(), own_workers.pid]
    assert "waiting for the warm worker to import the notebook's modules" in capsys.readouterr().out


def test_a_run_while_the_worker_starts_says_that_it_starts(kernel, own_workers, capsys):
    chain(kernel)  # no imports to preload: the worker only starts (IPython takes longer than planning)
    run = kernel.run("%kale_run --no-snapshot")
    assert run.status == "succeeded"
    out = capsys.readouterr().out
    assert "waiting for the warm worker to start" in out and "import the notebook's modules" not in out


def test_changing_the_imports_re_warms_one_worker(kernel, probe, own_workers):
    kernel.run("%%imports\nimport kale_probe", cell_id="imports")
    chain(kernel, 2)
    assert own_workers.wait_ready(120)
    first = own_workers._process
    kernel.run("%%imports\nimport kale_probe\nimport kale_probe_b", cell_id="imports")
    assert own_workers.wait_ready(120)
    second = own_workers._process
    assert second.pid != first.pid and "kale_probe_b" in own_workers.modules
    assert first.wait(30) is not None  # the worker that lacked kale_probe_b is gone: one per kernel
    run = kernel.run("%kale_run --no-snapshot")
    assert run.status == "succeeded"
    assert importers(probe).count(second.pid) == 2 and len(importers(probe)) == 5  # 2 kernel, 1 + 2 workers
    kernel.run("%%imports\nimport kale_probe", cell_id="imports")  # fewer imports: the worker has them
    assert own_workers._process is second


def test_local_modules_are_left_to_the_steps(kernel, probe, own_workers, tmp_path, monkeypatch):
    (tmp_path / "helpers.py").write_text(PROBE + "VERSION = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # the notebook's folder, as in a kernel started there
    kernel.run("%%imports\nimport helpers")
    kernel.run("%%step a\nversion = helpers.VERSION")
    assert own_workers.wait_ready(120)
    (tmp_path / "helpers.py").write_text(PROBE + "VERSION = 2\n")
    run = kernel.run("%kale_run")
    assert run.load("version") == 2  # the step imported the snapshot's helpers, not a preloaded copy
    assert own_workers.pid not in importers(probe)


def test_preload_imports_off_preloads_only_kale_preload(kernel, probe, own_workers):
    kernel.run("%config Kale.preload_imports = False")
    kernel.run("%config Kale.preload = ['kale_probe_b']")
    kernel.run("%%imports\nimport kale_probe")
    assert "kale_probe" not in own_workers.modules and "kale_probe_b" in own_workers.modules


def test_a_module_that_prints_when_imported_does_not_disturb_the_worker(kernel, own_workers, tmp_path_factory,
                                                                         monkeypatch):
    libs = tmp_path_factory.mktemp("noisy")
    (libs / "noisy_module.py").write_text("print('hello from an import')\nimport sys\n"
                                          "sys.stdout.buffer.write(b'{not json\\n')\n")
    monkeypatch.syspath_prepend(str(libs))
    kernel.run("%%imports\nimport noisy_module")
    kernel.run("%%step a\nx = 1")
    assert own_workers.wait_ready(120)
    assert kernel.run("%kale_run --no-snapshot").status == "succeeded"


def test_matplotlib_preloaded_still_draws_into_the_step_notebook(kernel, own_workers):
    pytest.importorskip("matplotlib")
    import nbformat

    kernel.run("%%imports\nimport matplotlib.pyplot as plt")
    kernel.run("%%step draw\nplt.plot([1, 2, 3])\nplt.show()")
    assert own_workers.wait_ready(120)
    run = kernel.run("%kale_run --no-snapshot")
    nb = nbformat.read(str(run.notebook("draw")), as_version=4)
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert images, "the figure reached the executed notebook"


def test_the_worker_reports_ready_and_a_dead_one_does_not_hang_waiters():
    server = WorkerServer()
    try:
        assert server.wait_ready(120) and server.ready
        dead = server._process
        dead.kill()
        dead.wait(30)
        assert server.wait_ready(120) and server._process is not dead  # a new worker, on demand
    finally:
        server.close()


def test_a_virtualenv_in_the_notebook_folder_holds_libraries_not_local_code(tmp_path):
    from kale_magic.engines.local.workers import _is_local

    assert _is_local(str(tmp_path / "utils.py"), str(tmp_path))
    assert _is_local(str(tmp_path / "src" / "pkg" / "__init__.py"), str(tmp_path))
    assert not _is_local(str(tmp_path / ".venv/lib/python3.11/site-packages/pandas/__init__.py"), str(tmp_path))
    assert not _is_local(str(tmp_path.parent / "elsewhere.py"), str(tmp_path))


@pytest.mark.slow  # a Jupyter kernel
def test_a_notebook_with_pandas_and_sklearn_in_a_real_kernel_runs_twice_with_warm_steps(tmp_path, probe):
    """nbclient drives an ipykernel as a frontend would; every step's values equal the kernel's."""
    pytest.importorskip("sklearn")
    import nbformat
    from nbclient import NotebookClient
    from nbformat.v4 import new_code_cell, new_notebook

    from cli_helpers import kernel_env, printed

    cells = [
        "%load_ext kale_magic\n%config Kale.panel = 'text'",
        "%%imports\nimport pandas as pd\nfrom sklearn.linear_model import LinearRegression\nimport kale_probe",
        "%%parameters\nn = 50",
        "%%step frame\ndf = pd.DataFrame({'x': range(n)})\ndf['y'] = 3 * df.x + 1",
        "%%step fit\nmodel = LinearRegression().fit(df[['x']], df.y)\nslope = float(model.coef_[0])",
        "%%step report\nsummary = f'{len(df)} rows, slope {slope:.1f}'",
        "first = %kale_run --no-snapshot",
        "second = %kale_run --no-snapshot --no-cache --param n=80",
        "import json, os\n"
        "worker = get_ipython().magics_manager.registry['Kale'].workers.pid\n"
        "print(json.dumps({'kernel': os.getpid(), 'worker': worker, 'statuses': [first.status, second.status],\n"
        "                  'summaries': [first.load('summary'), second.load('summary')], 'kernel_summary': summary,\n"
        "                  'frame_equal': bool(first.load('df').equals(df))}))",
    ]
    nb = new_notebook(cells=[new_code_cell(c) for c in cells])
    env = kernel_env()
    env["PYTHONPATH"] = os.pathsep.join([os.environ["KALE_TEST_LIBS"], env["PYTHONPATH"]])
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute(env=env)
    import json

    result = json.loads(printed(nb.cells[-1]))
    assert result["statuses"] == ["succeeded", "succeeded"]
    assert result["summaries"] == ["50 rows, slope 3.0", "80 rows, slope 3.0"]
    assert result["kernel_summary"] == "50 rows, slope 3.0" and result["frame_equal"]
    # pandas, scikit-learn and the probe were imported by the kernel and the warm worker, by no step
    assert sorted(importers(probe)) == sorted([result["kernel"], result["worker"]])
    assert nbformat.validate(nb) is None
