"""Shared fixtures: a real IPython shell with the extension loaded, in a temporary workspace."""

from __future__ import annotations

import atexit
import subprocess
import textwrap

import pytest
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

from containers import (base_image, docker_client, docker_pipeline_root, pip_cache,  # noqa: F401 (fixtures)
                        shared_pipeline_root)


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
