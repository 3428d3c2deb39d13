"""The cache never serves a stale result: reads it cannot see force a conservative key.

Each scenario edits what a step reads in a way today's audit hook missed (a native
reader, a subprocess, a module on an absolute ``sys.path`` entry, an appended file,
a descriptor-relative open) and checks that the next run executes the step and
returns the new value.  What executed is counted through the side channel of
:mod:`test_cache`, never timed.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path

import pytest
from IPython.core.error import UsageError

from kale_magic.errors import KaleError
from kale_magic.step.reads import FileReads
from oracle import run_cells
from test_cache import cache_check, kale_run, mark, side_channel  # noqa: F401 - the fixture is used here too
from test_cache_files import EMPTY_NOTEBOOK, edit, folder, mode  # noqa: F401 - fixtures


# 1. native readers, subprocesses, unhooked libraries ------------------------------------------

def write_parquet(path: Path, values: list[int]) -> None:
    import pandas as pd

    pd.DataFrame({"a": values}).to_parquet(path)


def test_read_parquet_is_seen(kernel, folder, mode):
    write_parquet(folder / "data.parquet", [1, 2, 3])
    run_cells(kernel, [f"%%step load\n{mark('load')}import pandas as pd\ntotal = int(pd.read_parquet("
                       "'data.parquet').a.sum())"])
    assert kale_run(kernel, mode)[1] == ["load"]
    assert kale_run(kernel, mode)[1] == []
    write_parquet(folder / "data.parquet", [1, 2, 3, 4])
    assert "▶ load  run: workspace files changed: data.parquet" in cache_check(kernel, mode)
    run, ran = kale_run(kernel, mode)
    assert ran == ["load"] and run.load("total") == 10


def test_pyarrow_readers_record_files_folders_and_globs(tmp_path, monkeypatch):
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    (tmp_path / "parts").mkdir()
    for i in range(2):
        write_parquet(tmp_path / "parts" / f"{i}.parquet", [i])
    write_parquet(tmp_path / "one.parquet", [5])
    monkeypatch.chdir(tmp_path)
    with FileReads(tmp_path) as reads:
        pq.read_table("one.parquet")
        ds.dataset("parts").to_table()
        pq.ParquetFile(tmp_path / "one.parquet").read()
    report = reads.report()
    assert report["files"] == ["one.parquet", "parts/0.parquet", "parts/1.parquet"]
    assert "parts" in report["listings"] and report["unseen"] == []


@pytest.mark.slow  # torch: a heavy ML framework
def test_torch_native_readers_are_recorded(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")

    monkeypatch.chdir(tmp_path)
    (tmp_path / "raw.bin").write_bytes(bytes(16))
    with FileReads(tmp_path) as reads:
        torch.from_file("raw.bin", size=4, dtype=torch.float32)
        torch.UntypedStorage.from_file(str(tmp_path / "raw.bin"), False, 16)
    assert reads.report()["files"] == ["raw.bin"]
    (tmp_path / "other.bin").write_bytes(bytes(16))
    with FileReads(tmp_path) as reads:
        torch.UntypedStorage.from_file("other.bin", False, 16)
    assert reads.report()["files"] == ["other.bin"]


SUBPROCESS_STEP = ("%%step shell{reads}\n" + mark("shell") +
                   "import subprocess\ntext = subprocess.run(['cat', 'data.txt'], capture_output=True, "
                   "text=True).stdout")


def test_a_subprocess_keys_the_step_on_the_whole_workspace(kernel, folder, mode):
    (folder / "data.txt").write_text("one")
    run_cells(kernel, [SUBPROCESS_STEP.format(reads="")])
    run, ran = kale_run(kernel, mode)
    assert ran == ["shell"]
    assert run.steps["shell"].reason == (
        "keyed on the whole workspace, as it starts another process ('cat data.txt'), whose reads are out of "
        "sight; declare what it reads with %%step shell --reads GLOB[,GLOB]")
    assert kale_run(kernel, mode)[1] == []
    assert "↺ shell  reuse the result of run" in cache_check(kernel, mode)  # the preview sees the same workspace
    edit(folder / "data.txt", "two!")
    assert "▶ shell  run: workspace files changed: the workspace (the step is keyed on all of it: it starts " \
           "another process ('cat data.txt')" in cache_check(kernel, mode)
    run, ran = kale_run(kernel, mode)
    assert ran == ["shell"] and run.load("text") == "two!"
    edit(folder / "scratch.txt", "any other file counts too")
    assert kale_run(kernel, mode)[1] == ["shell"]


def test_reads_declares_what_a_subprocess_reads(kernel, folder, mode):
    (folder / "data.txt").write_text("one")
    run_cells(kernel, [SUBPROCESS_STEP.format(reads=" --reads data.*")])
    run, ran = kale_run(kernel, mode)
    assert ran == ["shell"] and run.steps["shell"].reason.startswith(
        "keyed on the files it declares with --reads (data.*), as it starts another process")
    edit(folder / "scratch.txt", "not declared: no reason to run")
    assert kale_run(kernel, mode)[1] == []
    edit(folder / "data.txt", "two!")
    run, ran = kale_run(kernel, mode)
    assert ran == ["shell"] and run.load("text") == "two!"
    assert run.steps["shell"].reason.startswith("workspace files changed: data.* (declared with --reads)")
    (folder / "data.new").write_text("a new match counts")
    assert kale_run(kernel, mode)[1] == ["shell"]


def test_shell_escapes_and_process_pools_are_unseen_reads(tmp_path, monkeypatch):
    import concurrent.futures

    monkeypatch.chdir(tmp_path)
    for run_it in (lambda: os.system("true"),
                   lambda: concurrent.futures.ProcessPoolExecutor(1).submit(abs, -1).result()):
        with FileReads(tmp_path) as reads:
            run_it()
        assert "it starts another process" in reads.report()["unseen"][0]


@pytest.fixture
def fake_native_library(tmp_path_factory, monkeypatch):
    """A package named like a native-I/O library without a hook (h5py is not installed here)."""
    site = tmp_path_factory.mktemp("site")
    (site / "h5py.py").write_text("def File(path):\n    return open(path, 'rb', buffering=0).fileno()\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, "h5py", raising=False)
    yield site
    sys.modules.pop("h5py", None)  # the kernel's cells ran in this process


def test_a_library_without_a_read_hook_forces_the_conservative_key(kernel, folder, fake_native_library):
    run_cells(kernel, [f"%%step h5\n{mark('h5')}import h5py\nok = True"])
    run, ran = kale_run(kernel)
    assert ran == ["h5"] and "as it uses h5py, which reads files in native code that kale has no read hook " \
                               "for" in run.steps["h5"].reason
    edit(folder / "scratch.txt", "changed")
    assert kale_run(kernel)[1] == ["h5"]


def test_read_hooks_come_from_entry_points_and_a_broken_one_is_reported(tmp_path, monkeypatch):
    from kale_magic.step import readhooks

    dist = tmp_path / "fake_hooks-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-hooks\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[kale_magic.read_hooks]\nh5py = fake_hooks:H5PY\nnetCDF4 = fake_hooks:missing\n")
    (tmp_path / "fake_hooks.py").write_text(
        "from kale_magic.step.readhooks import ReadHook\nH5PY = ReadHook('h5py', {'h5py': ('File',)})\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = readhooks.ReadHookRegistry()
    with pytest.warns(UserWarning, match="read hook entry point 'netCDF4'.*failed to load"):
        assert registry.get("h5py").readers == {"h5py": ("File",)}
    assert "netCDF4" in registry.broken
    with pytest.raises(KaleError, match="no read hook for 'netCDF4' \\(its entry point failed to load"):
        registry.get("netCDF4")
    assert registry.unhooked({"h5py", "netCDF4"}) == [
        "it uses netCDF4, which reads files in native code that kale has no read hook for"]


def test_sqlite_databases_are_inputs(tmp_path, monkeypatch):
    import sqlite3

    monkeypatch.chdir(tmp_path)
    sqlite3.connect("db.sqlite").execute("create table t (x)").connection.commit()
    with FileReads(tmp_path) as reads:
        sqlite3.connect("db.sqlite").execute("select * from t").fetchall()
        sqlite3.connect(":memory:")
    assert reads.report()["files"] == ["db.sqlite"]


# 2. local modules on an absolute sys.path entry -----------------------------------------------

def test_modules_on_an_absolute_sys_path_entry_come_from_the_snapshot_and_key_the_step(kernel, folder):
    (folder / "src").mkdir()
    (folder / "src" / "helper_for_trust.py").write_text("VALUE = 1\n")
    sys.modules.pop("helper_for_trust", None)
    kernel.run("import os, sys\nsys.path.insert(0, os.path.abspath('src'))")  # a plain cell: not recorded
    try:
        run_cells(kernel, [f"%%step use\n{mark('use')}import helper_for_trust\nvalue = helper_for_trust.VALUE\n"
                           "where = helper_for_trust.__file__"])
        run, ran = kale_run(kernel)
        assert ran == ["use"] and run.load("value") == 1
        assert not run.load("where").startswith(str(folder / "src"))  # the run's copy, not the live folder
        edit(folder / "src" / "helper_for_trust.py", "VALUE = 22\n")
        run, ran = kale_run(kernel)
        assert ran == ["use"] and run.load("value") == 22
        assert run.steps["use"].reason == "workspace files changed: src/helper_for_trust.py"
    finally:
        sys.path.remove(str(folder / "src"))
        sys.modules.pop("helper_for_trust", None)


# 3. append, r+, os.open without O_TRUNC -------------------------------------------------------

def test_a_file_written_into_without_truncation_is_an_input(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("log.txt", "rplus.txt", "raw.bin", "trunc.txt"):
        (tmp_path / name).write_text("old")
    with FileReads(tmp_path) as reads:
        open("log.txt", "a").close()  # opened, not written: still what it held
        open("rplus.txt", "r+").close()
        os.close(os.open("raw.bin", os.O_WRONLY))
        open("trunc.txt", "w").close()
        open("new.txt", "a").close()
        os.close(os.open("new.bin", os.O_WRONLY | os.O_CREAT))
    report = reads.report()
    assert report["files"] == ["log.txt", "raw.bin", "rplus.txt"]
    assert reads.outputs == {"trunc.txt", "new.txt", "new.bin"}


def test_a_step_appending_to_a_file_is_not_served_stale(kernel, folder):
    (folder / "history.txt").write_text("")
    run_cells(kernel, [f"%%step grow\n{mark('grow')}with open('history.txt', 'a') as f:\n    f.write('b\\n')\n"
                       "lines = open('history.txt').read().split()"])
    edit(folder / "history.txt", "a\n")  # the kernel appended too
    run, ran = kale_run(kernel)
    assert ran == ["grow"] and run.load("lines") == ["a", "b"]
    edit(folder / "history.txt", "x\ny\n")
    run, ran = kale_run(kernel)
    assert ran == ["grow"] and run.load("lines") == ["x", "y", "b"]


# 4. descriptors ---------------------------------------------------------------------------------

def test_descriptor_relative_opens_and_listings_are_resolved(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.txt").write_text("x")
    (tmp_path / "x.txt").write_text("not this one")
    monkeypatch.chdir(tmp_path)
    with FileReads(tmp_path) as reads:
        folder = os.open("sub", os.O_RDONLY)
        try:
            os.close(os.open("x.txt", os.O_RDONLY, dir_fd=folder))
            os.listdir(folder)
            list(os.scandir(folder))
        finally:
            os.close(folder)
    report = reads.report()
    assert report["files"] == ["sub", "sub/x.txt"] and list(report["listings"]) == ["sub"] and report["unseen"] == []


def test_an_unresolvable_descriptor_makes_the_reads_unseen(tmp_path, monkeypatch):
    from kale_magic.step import reads as reads_module

    def no_proc(fd):
        raise OSError("no /proc here")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(reads_module, "_descriptor_path", no_proc)
    with FileReads(tmp_path) as reads:
        os.listdir(os.open(".", os.O_RDONLY))
    assert reads.report()["unseen"][0].startswith("a read could not be recorded (os.listdir: OSError")


# 5. a cell that fails before it runs ------------------------------------------------------------

def test_a_step_cell_that_does_not_tokenize_makes_its_recording_stale(kernel, folder):
    run_cells(kernel, ["%%step b\nx = 1"])
    error = kernel.error("\t%%step b\n    x = 2\n", cell_id="cell-0")
    assert isinstance(error, IndentationError)
    with pytest.raises(KaleError) as refused:
        kernel.shell.run_line_magic("kale_run", "")
    assert str(refused.value) == (
        "the %%step b cell failed before it ran (IndentationError: unindent does not match any outer indentation "
        "level (<tokenize>, line 2)), so kale still holds its previous version; fix the cell and run it again "
        "before %kale_run")
    kernel.run("%%step b\nx = 2", cell_id="cell-0")
    assert kernel.kale_run().load("x") == 2


def test_without_cell_ids_a_failed_imports_cell_is_named_by_its_kind(kernel, folder):
    kernel.run("%%imports\nimport math")
    kernel.run("%%step b\nx = math.floor(2.5)")
    kernel.error("\t%%imports\n    import os\n")
    with pytest.raises(KaleError, match="^a %%imports cell failed before it ran \\(IndentationError: "):
        kernel.shell.run_line_magic("kale_show", "")
    kernel.run("%%imports\nimport math")
    assert kernel.kale_run().load("x") == 2


# --reads ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("line, problem", [
    ("--reads /etc/passwd", "is not relative to the notebook's folder"),
    ("--reads ../other/*.csv", "leaves the workspace"),
    ("--reads .kale/runs", "leaves the workspace"),
    ("--reads 'a[b'", "is not a glob"),
    ("--reads ,", "give one or more globs"),
])
def test_reads_is_validated(kernel, line, problem):
    with pytest.raises(UsageError, match=f"%%step s: --reads .*{problem}"):
        kernel.run(f"%%step s {line}\nx = 1")


def test_reads_is_shown(kernel, capsys):
    kernel.run("%%step s --reads 'data/**/*.csv,lookup.db'\nx = 1")
    kernel.shell.run_line_magic("kale_show", "")
    assert "  s (root); reads: data/**/*.csv, lookup.db" in capsys.readouterr().out


@pytest.mark.parametrize("glob, path, matched", [
    ("data/*.csv", "data/a.csv", True), ("data/*.csv", "data/x/a.csv", False),
    ("data/**/*.csv", "data/x/y/a.csv", True), ("data/**/*.csv", "data/a.csv", True),
    ("data", "data/x/a.csv", True), ("dat?.db", "data.db", True), ("*.db", "x/a.db", False),
])
def test_reads_globs(glob, path, matched):
    from kale_magic.cache.workspace import glob_matches

    assert glob_matches(glob, path) is matched
