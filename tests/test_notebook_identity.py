"""A notebook's identity does not depend on the frontend.

Frontends that say which file a kernel runs are believed; without them (nbconvert,
nbclient, papermill) the notebook is the ``.ipynb`` file in the kernel's working
directory that holds the recorded cells; failing that, a fingerprint of the step
names — never one shared name for every notebook.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from kale_magic.history.store import RunStore


def notebook(path: Path, cells: list[str], with_ids: bool = True) -> Path:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    if not with_ids:
        for cell in nb.cells:
            cell.pop("id")
        nb.nbformat_minor = 4
    nbformat.write(nb, str(path))
    return path


STEPS_A = ["%%step load\nx = [1, 2, 3]", "%%step train\ny = sum(x)"]
STEPS_B = ["%%step load\nx = [10, 20]", "%%step train\ny = max(x)"]  # the same step names, other code


def shown(kernel, capsys) -> str:
    capsys.readouterr()
    kernel.shell.run_line_magic("kale_show", "")
    return capsys.readouterr().out


def test_the_kernels_folder_is_searched_for_the_file_holding_the_recorded_cells(kernel, tmp_path, capsys):
    notebook(tmp_path / "a.ipynb", STEPS_A)
    notebook(tmp_path / "b.ipynb", STEPS_B, with_ids=False)
    for cell in STEPS_B:  # no cell ids from the frontend (nbclient sends none): matched by text
        kernel.run(cell)
    assert kernel.magics.plan().pipeline == "b"
    assert ("Notebook: b.ipynb (matched by its cells in the kernel's working directory); its runs and cached "
            "steps go by 'b'") in shown(kernel, capsys)
    notebook(tmp_path / "b.nbconvert.ipynb", STEPS_B)  # nbconvert's copy beside it: the original wins
    assert kernel.magics.plan().pipeline == "b"
    kernel.run("%%step extra\nz = 1")  # a cell no file holds (not saved yet): no file matches
    out = shown(kernel, capsys)
    assert "Notebook: no file found" in out and "%config Kale.notebook_path = 'NAME.ipynb'" in out
    assert kernel.magics.plan().pipeline.startswith("pipeline-")


def test_without_a_file_the_name_is_a_fingerprint_of_the_step_names(kernel):
    for cell in STEPS_A:
        kernel.run(cell)
    name = kernel.magics.plan().pipeline
    kernel.run("%%step train\ny = sum(x) * 2")  # editing a step keeps the name
    assert kernel.magics.plan().pipeline == name
    kernel.run("%kale_reset")
    kernel.run("%%step fetch\nx = [1]")
    assert kernel.magics.plan().pipeline not in (name, "pipeline")


@pytest.mark.slow  # Jupyter kernels (nbconvert --execute)
def test_nbconvert_runs_of_two_notebooks_in_one_folder_keep_their_own_identity(tmp_path):
    extra = ["%load_ext kale_magic", "%kale_show", "run = %kale_run", "assert run.status == 'succeeded'"]
    for name, steps in (("a", STEPS_A), ("b", STEPS_B)):
        notebook(tmp_path / f"{name}.ipynb", extra[:1] + steps + extra[1:])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parents[1]),
                                                                     os.environ.get("PYTHONPATH")]))}
    env.pop("JPY_SESSION_NAME", None)

    def execute(name: str) -> nbformat.NotebookNode:
        subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
                        f"{name}.ipynb"], cwd=tmp_path, env=env, check=True, capture_output=True, timeout=240)
        return nbformat.read(str(tmp_path / f"{name}.nbconvert.ipynb"), as_version=4)

    executed = {name: execute(name) for name in ("a", "b", "a")}
    show = "".join(o.get("text", "") or o.get("data", {}).get("text/plain", "") for o in executed["a"].cells[3].outputs)
    assert "Pipeline 'a'" in show and "Notebook: a.ipynb (matched by its cells" in show
    with RunStore.for_workspace(tmp_path) as store:
        runs = store.runs()
    assert [r.pipeline for r in runs] == ["a", "b", "a"]
    again = runs[2]
    assert [s.status for s in again.steps] == ["cached", "cached"]  # b's run in between changed nothing of a's
    assert {s.cached_from for s in again.steps} == {runs[0].run_id}
    html = json.dumps([o for c in executed["a"].cells for o in c.outputs])
    assert 'href=\\".kale/runs/' in html and "kale-magic/files" not in html  # no server: plain relative links
