"""The cache key sees exactly the workspace files a step read (recorded while it ran).

A folder holds two notebooks, a data file, a local module and a scratch file.  What
executed is counted through a side channel outside the workspace (``$KALE_TEST_LOG``),
never timed; each scenario runs with a snapshot and with ``--no-snapshot`` (files read
in place).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from kale_magic.step.reads import FileReads
from oracle import run_cells
from test_cache import cache_check, kale_run, mark, side_channel  # noqa: F401 - the fixture is used here too

EMPTY_NOTEBOOK = {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


@pytest.fixture(params=["snapshot", "no-snapshot"])
def mode(request):
    return "" if request.param == "snapshot" else "--no-snapshot"


@pytest.fixture
def folder(kernel, tmp_path, monkeypatch):
    """Two notebooks side by side, the kernel running ``a.ipynb``; data, a local module, a scratch file."""
    for name in ("a.ipynb", "b.ipynb"):
        (tmp_path / name).write_text(json.dumps(EMPTY_NOTEBOOK))
    (tmp_path / "data.csv").write_text("1\n2\n3\n")
    (tmp_path / "scaling.py").write_text("FACTOR = 10\n")
    (tmp_path / "scratch.txt").write_text("notes")
    monkeypatch.syspath_prepend(str(tmp_path))  # `import scaling` works in the kernel, as in a real one
    monkeypatch.delitem(sys.modules, "scaling", raising=False)
    kernel.shell.run_line_magic("config", f"Kale.notebook_path = {str(tmp_path / 'a.ipynb')!r}")
    return tmp_path


def edit(path: Path, text: str) -> None:
    """Change a file so that stat sees it even within one timestamp tick (other size)."""
    path.write_text(text)


PIPELINE = [
    f"%%step load\n{mark('load')}rows = [int(line) for line in open('data.csv')]",
    f"%%step total\n{mark('total')}t = sum(rows)",
    f"%%step scale --after ''\n{mark('scale')}import scaling\nfactor = scaling.FACTOR",
    f"%%step plain --after ''\n{mark('plain')}z = 1",
]


def test_only_the_steps_that_read_a_changed_file_run(kernel, folder, mode):
    run_cells(kernel, PIPELINE)
    first, ran = kale_run(kernel, mode)
    assert sorted(ran) == ["load", "plain", "scale", "total"]

    edit(folder / "b.ipynb", json.dumps({**EMPTY_NOTEBOOK, "metadata": {"edited": True}}))
    edit(folder / "scratch.txt", "other notes, longer")
    edit(folder / "a.ipynb", json.dumps({**EMPTY_NOTEBOOK, "metadata": {"saved": 2}}))
    (folder / "new_scratch.txt").write_text("x")
    run, ran = kale_run(kernel, mode)
    assert ran == [] and {s.cached_from for s in run.steps.values()} == {first.id}

    edit(folder / "data.csv", "1\n2\n3\n4\n")
    assert "▶ load   run: workspace files changed: data.csv" in cache_check(kernel, mode)
    run, ran = kale_run(kernel, mode)
    assert sorted(ran) == ["load", "total"]  # total reads no file; its input changed
    assert run.steps["load"].reason == "workspace files changed: data.csv"
    assert run.steps["total"].reason == "input rows from step 'load' changed"
    assert run.load("t") == 10

    edit(folder / "scaling.py", "FACTOR = 100\n")
    run, ran = kale_run(kernel, mode)
    assert ran == ["scale"] and run.load("factor") == 100
    assert run.steps["scale"].reason == "workspace files changed: scaling.py"
    assert kale_run(kernel, mode)[1] == []


def test_entries_are_found_by_what_the_step_read_last_time(kernel, folder, mode):
    """Two-level lookup: the files an entry lists decide, so a step that reads other files
    depending on a file's content finds its earlier result when that content comes back."""
    (folder / "which.txt").write_text("a.csv")
    (folder / "a.csv").write_text("alpha")
    (folder / "b.csv").write_text("beta!")
    run_cells(kernel, [f"%%step pick\n{mark('pick')}name = open('which.txt').read()\ntext = open(name).read()\n"
                       "try:\n    extra = open('extra.txt').read()\nexcept FileNotFoundError:\n    extra = ''"])
    first, ran = kale_run(kernel, mode)
    assert ran == ["pick"]
    edit(folder / "which.txt", "b.csv")
    run, ran = kale_run(kernel, mode)
    assert ran == ["pick"] and run.load("text") == "beta!"
    edit(folder / "b.csv", "beta changed")  # read by the second result only
    run, ran = kale_run(kernel, mode)
    assert ran == ["pick"] and run.steps["pick"].reason == "workspace files changed: b.csv"
    edit(folder / "which.txt", "a.csv")
    run, ran = kale_run(kernel, mode)
    assert ran == [] and run.steps["pick"].cached_from == first.id and run.load("text") == "alpha"
    (folder / "extra.txt").write_text("now here")  # missing when it was read: its appearing counts
    run, ran = kale_run(kernel, mode)
    assert ran == ["pick"] and run.steps["pick"].reason == "workspace files changed: extra.txt (new)"
    assert run.load("extra") == "now here"


def test_a_listed_folder_counts_by_its_names(kernel, folder, mode):
    (folder / "inbox").mkdir()
    (folder / "inbox" / "1.txt").write_text("one")
    run_cells(kernel, [f"%%step scan\n{mark('scan')}import glob\nnames = sorted(glob.glob('inbox/*.txt'))"])
    kale_run(kernel, mode)
    edit(folder / "inbox" / "1.txt", "one, edited")  # listed, never read
    assert kale_run(kernel, mode)[1] == []
    (folder / "inbox" / "2.txt").write_text("two")
    run, ran = kale_run(kernel, mode)
    assert ran == ["scan"] and run.load("names") == ["inbox/1.txt", "inbox/2.txt"]
    assert run.steps["scan"].reason == "workspace files changed: inbox/ (files added or removed)"


def test_files_a_step_writes_are_outputs_and_rewriting_what_it_read_is_never_cached(kernel, folder):
    (folder / "counter.txt").write_text("0")
    run_cells(kernel, [
        f"%%step report\n{mark('report')}open('report.txt', 'w').write('done')\nok = True",
        f"%%step count --after ''\n{mark('count')}n = int(open('counter.txt').read())\n"
        "open('counter.txt', 'w').write(str(n + 1))",
    ])
    kale_run(kernel, "--no-snapshot")
    run, ran = kale_run(kernel, "--no-snapshot")
    assert ran == ["count"] and run.load("n") == 2  # (the kernel counted once too); report.txt is an output
    assert run.steps["count"].reason == ("not cached: counter.txt changed while the step ran (it reads what it "
                                        "writes, or something else wrote it)")


def test_the_recorder_keeps_workspace_inputs_and_leaves_the_import_system_out(tmp_path, monkeypatch):
    import importlib
    import importlib.metadata
    import pathlib
    import sys

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.csv").write_text("x")
    (tmp_path / "localmod_for_reads.py").write_text("import os\nLISTED = os.listdir('data')\n")
    (tmp_path / ".kale").mkdir()
    (tmp_path / ".kale" / "value").write_text("v")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    outside = tmp_path.parent / f"{tmp_path.name}-outside.txt"
    outside.write_text("o")
    step_code = f"""
open("data/x.csv").read()
open({str(outside)!r}).read()  # outside the workspace
open(".kale/value").read()  # kale's own files
with open("out.txt", "w") as out:  # written first: an output
    out.write("1")
open("out.txt").read()
list(pathlib.Path(".").iterdir())  # the step's own listing of the workspace
importlib.import_module("localmod_for_reads")  # the import system lists sys.path folders: not inputs
list(importlib.metadata.distributions())  # so do package scanners
"""
    with FileReads(tmp_path) as reads:  # a step's cells run as __main__
        exec(step_code, {"__name__": "__main__", "pathlib": pathlib, "importlib": importlib})
    report = reads.report()
    sys.modules.pop("localmod_for_reads", None)
    assert report["files"] == ["data/x.csv", "localmod_for_reads.py"]
    assert sorted(report["listings"]) == ["", "data"] and report["changed"] == []
