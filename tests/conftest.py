"""Shared fixtures and the ``slow`` marker.

Fixtures: ``kernel`` (a real IPython shell with the extension loaded, working in a temporary folder),
``workers`` (one warm worker server for the session), ``workspace`` (the kernel's folder with data and
a local module), ``kfp_env`` (no KFP setting of the developer's environment), ``kfp_server`` (a fake
KFP API server on 127.0.0.1, with ``kfp_env``), ``tiny_disk``, and the container fixtures of
``tests/containers`` (``docker_pipeline_root`` ...; ``kfp_local`` in test_kfp_containers is that root).

``slow`` marks tests that need containers, browsers, Jupyter kernels (nbclient, jupyter_client) or big
data, long subprocess runs (pip resolving against an index, a fresh interpreter importing an ML library),
and heavy ML frameworks such as torch (its import alone costs seconds and thousands of modules, which
slow every later ``inspect.stack()``; kfp's task setters call it); ``pytest -m "not slow"`` is the fast
loop (README, Development).  The demo
notebooks (nbval) and every test using a container fixture or the object store server (``s3_server``) are
marked here; the others carry the marker in their file.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import textwrap
import time

import pytest
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

from containers import (base_image, docker_client, docker_pipeline_root, pip_cache,  # noqa: F401 (fixtures)
                        shared_pipeline_root)


CONTAINER_FIXTURES = frozenset({"docker_client", "base_image", "docker_pipeline_root", "shared_pipeline_root"})
SERVER_FIXTURES = frozenset({"s3_server"})  # an object store (seaweedfs) in a process of its own


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.suffix == ".ipynb" or (CONTAINER_FIXTURES | SERVER_FIXTURES) & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


class Kernel:
    """A real InteractiveShell that re-raises cell errors, like a test kernel."""

    def __init__(self, shell: InteractiveShell):
        self.shell = shell
        self.ns = shell.user_ns

    def run(self, source: str, cell_id: str | None = None):
        result = self.shell.run_cell(textwrap.dedent(source).strip("\n"), store_history=True, cell_id=cell_id)
        if result.error_before_exec is not None:
            raise result.error_before_exec
        if result.error_in_exec is not None:
            raise result.error_in_exec
        return result.result

    def error(self, source: str, cell_id: str | None = None) -> BaseException:
        """Run a cell that must fail; return its exception."""
        result = self.shell.run_cell(textwrap.dedent(source).strip("\n"), store_history=True, cell_id=cell_id)
        error = result.error_before_exec or result.error_in_exec
        assert error is not None, "the cell was expected to fail"
        return error

    def cells(self, *sources: str):
        for source in sources:
            self.run(source)

    def kale_run(self, line: str = ""):
        """The Run of ``%kale_run line``, also a failed one (which stops the notebook: the failure holds it)."""
        from kale_magic.errors import RunFailed

        try:
            return self.shell.run_line_magic("kale_run", line)
        except RunFailed as failure:
            return failure.run

    @property
    def magics(self):
        return self.shell.magics_manager.registry["Kale"]


@pytest.fixture(autouse=True)
def _print_as_python_has_it():
    """``builtins.print`` as it was, after every test: kfp.local indents its logs by swapping
    ``builtins.print`` (``kfp.local.logging_utils.indented_print``), which is not thread-safe; the worker
    threads of a ``dsl.ParallelFor`` can leave it swapped, and every later print then writes four spaces to
    whatever ``sys.stdout`` is at that moment (seen as stray indentation in later tests' captured output)."""
    import builtins

    own = builtins.print
    yield
    builtins.print = own


@pytest.fixture(scope="session")
def workers():
    """One warm worker server for the whole test session (each kernel would otherwise start its own)."""
    from kale_magic.engines.local.workers import WorkerServer

    server = WorkerServer()
    server.start()
    yield server
    server.close()


@pytest.fixture
def kernel(tmp_path, monkeypatch, workers):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    config = Config()
    config.HistoryManager.enabled = False
    shell = InteractiveShell(config=config)
    shell.run_line_magic("load_ext", "kale_magic")
    k = Kernel(shell)
    k.magics.workers = workers
    yield k
    if "Kale" in shell.magics_manager.registry:
        k.magics.workers = None  # shared: the session fixture closes it
        shell.run_line_magic("unload_ext", "kale_magic")
    # Each shell registers an atexit cleanup that runs gc.collect(): hundreds of them, run when the suite
    # ends over everything the session still holds, kept pytest busy for minutes after its summary.
    atexit.unregister(shell.atexit_operations)
    InteractiveShell.clear_instance()


@pytest.fixture
def workspace(kernel, tmp_path, monkeypatch):
    """The kernel's folder (``tmp_path``) with data and a local module, importable as in a real kernel;
    the files are an hour old, so an edit during a test is seen as one."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data/train.csv").write_text("version 1\n")
    (tmp_path / "helper.py").write_text("VERSION = 1\n")
    old = time.time() - 3600
    for path in (tmp_path / "data/train.csv", tmp_path / "helper.py"):
        os.utime(path, (old, old))
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


@pytest.fixture
def kfp_env(monkeypatch, tmp_path):
    """No KFP endpoint, token or kfp context file of the developer's environment in the way."""
    for var in ("KF_PIPELINES_ENDPOINT", "KF_PIPELINES_UI_ENDPOINT", "KF_PIPELINES_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setenv("HOME", str(tmp_path))  # no kfp context file


@pytest.fixture
def kfp_server(kfp_env):
    """A fake KFP API server (tests/kfp_api_server.py) on 127.0.0.1, reached through the real kfp.Client."""
    from kfp_api_server import FakeKfpServer

    with FakeKfpServer() as server:
        yield server


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 1 MiB file system (tmpfs); needs mount rights (root).  Unmounted lazily: a run's store
    or a kernel's working folder may still hold it open when the test ends."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)
