"""The typed step job: what a local step's process receives, read back through the run's folder; the
plan's marshal backend reaches save (the KFP artifact type follows it)."""

import json
import os
import sys

import nbformat
import numpy as np
import pytest

from kale_magic import marshal
from kale_magic.layout import RunDir
from kale_magic.step.job import VERSION, StepJob, StepJobError
from kale_magic.step.notebooks import RUNTIME_IMPORT


def step_job(tmp_path, *cells, **fields):
    notebook = tmp_path / "make.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells]), str(notebook))
    run = RunDir(tmp_path / "run")
    run.make_step_dirs()
    return StepJob(step="make", notebook=str(notebook), run=str(run.path), cwd=str(tmp_path),
                   env=dict(os.environ), sys_path=tuple(sys.path), **fields)


def test_a_job_survives_json_and_names_its_files_by_the_run_folder(tmp_path):
    job = step_job(tmp_path, "x = 1", inputs={"a": "load"}, producers={"a": "load"}, outputs=("x",),
                   backends={"x": "dill"})
    back = StepJob.from_dict(json.loads(json.dumps(job.to_dict())))
    assert back == job and back.version == VERSION
    context, run = back.context(), RunDir(job.run)
    assert context.inputs == {"a": str(run.value("load", "a"))} and context.producers == {"a": "load"}
    assert context.outputs == {"x": str(run.value("make", "x"))}
    assert context.metrics_path == str(run.metrics_file("make")) and context.backends == {"x": "dill"}


def test_an_items_job_names_its_files_by_the_item_and_loads_a_loops_values_as_a_list(tmp_path):
    job = step_job(tmp_path, "x = 1", item=2, outputs=("x",),
                   inputs={"fold": "split[2]", "scores": ["train[0]", "train[1]"]},
                   producers={"fold": "split", "scores": "train"})
    back = StepJob.from_dict(json.loads(json.dumps(job.to_dict())))
    context, run = back.context(), RunDir(job.run)
    assert back.name == "make[2]" and context.item == 2
    assert context.inputs == {"fold": str(run.value("split[2]", "fold")),
                              "scores": [str(run.value("train[0]", "scores")), str(run.value("train[1]", "scores"))]}
    assert context.outputs == {"x": str(run.value("make[2]", "x"))}
    assert context.metrics_path == str(run.metrics_file("make[2]"))
    assert context.producers == {"fold": "split", "scores": "train"}


def test_a_job_of_another_version_is_refused_with_the_fix(tmp_path):
    data = {**step_job(tmp_path, "x = 1").to_dict(), "version": VERSION + 1}
    with pytest.raises(StepJobError,
                       match=rf"step 'make' was sent a job of version {VERSION + 1} .* restart the kernel"):
        StepJob.from_dict(data)


def test_the_worker_refuses_another_version_in_the_steps_outcome(workers, tmp_path):
    job = step_job(tmp_path, "x = 1")
    child = workers.submit({**job.to_dict(), "version": VERSION + 1})
    assert child.done.wait(60)
    outcome = RunDir(job.run).read_outcome("make")
    assert outcome.status == "failed" and "restart the kernel" in outcome.error


def test_the_plans_backend_reaches_save_in_the_step_process(workers, tmp_path):
    """numpy's own backend would be chosen for an array; the plan's choice (dill here) is what is saved."""
    save = f"{RUNTIME_IMPORT}\n_kale_rt.save_outputs(globals(), ['x'])"
    for backend in ("dill", "numpy"):
        job = step_job(tmp_path, "import numpy as np\nx = np.arange(3)", save, outputs=("x",),
                       backends={"x": backend})
        child = workers.submit(job.to_dict())
        assert child.done.wait(60) and child.exit == 0
        run = RunDir(job.run)
        assert run.read_outcome("make").saved["x"]["backend"] == backend
        assert marshal.load(run.value("make", "x")).tolist() == [0, 1, 2]


def test_save_tries_the_preferred_backend_first_and_falls_back(tmp_path):
    value = np.arange(4)
    assert marshal.save(value, tmp_path / "a")["backend"] == "numpy"
    assert marshal.save(value, tmp_path / "b", prefer="dill")["backend"] == "dill"
    assert marshal.save(value, tmp_path / "c", prefer="no-such-backend")["backend"] == "numpy"
    assert marshal.save({"k": 1}, tmp_path / "d", prefer="numpy")["backend"] == "pickle"  # numpy declines a dict
