"""Compiled with the defaults, the YAML runs in real containers on a stock Python image.

The notebook is annotated and run in a real kernel; the plan comes from the real planner; the pipeline,
compiled with no setting at all, runs under ``kfp.local.DockerRunner`` on the local ``python:3.11`` image
(Python and pip only, tests/containers), as a non-root user, with nothing of this environment inside:
each step's container installs what it imports and this exact kale-magic. Each value the pipeline
produces must equal what the same cells produced in the kernel (the oracle), metrics and HTML reports
included.
"""

import json
from pathlib import Path

import pytest

from kale_magic import marshal
from kale_magic.engines.kfp.compiler import compile_pipeline

NOTEBOOK = [
    """
    %%imports
    import numpy as np
    """,
    """
    %%parameters
    n = 4
    scale = 1.5
    layers = [3, 2]
    """,
    """
    %%step load
    X = np.arange(n) * scale
    sizes = list(layers)
    """,
    """
    %%step train --cpu 1 --memory 1Gi --retries 1 --timeout 600
    total = float(X.sum())
    model = {"total": total, "sizes": sizes, "first": sizes[0]}
    acc = total / 10
    """,
    """
    %%metrics
    acc
    """,
    """
    %%step report
    print("<b>total</b>", model["total"])
    summary = f"{model['first']}:{type(model['first']).__name__}"
    """,
]


@pytest.fixture
def kfp_local(docker_pipeline_root):
    return docker_pipeline_root


def outputs(root: Path, task: str, name: str) -> Path:
    """The output of the last run's ``task`` (kfp.local names run folders by time; a cache hit's outputs
    stay in the run that made them)."""
    runs = sorted((p for p in root.glob(f"*/{task}/{name}")), key=lambda p: p.parent.parent.name)
    return runs[-1]


def recorded_plan(kernel, cells=NOTEBOOK):
    kernel.cells(*cells)
    return kernel.magics.plan()


def test_compiled_yaml_runs_unchanged_under_kfp_local(kernel, kfp_local, tmp_path):
    from kfp import components

    plan = recorded_plan(kernel)
    path = compile_pipeline(plan, tmp_path / "pipeline.yaml")
    pipeline = components.load_component_from_file(str(path))
    pipeline()

    for step in plan.steps.values():  # the oracle: every value equals the kernel's
        for transfer in step.outputs:
            value = marshal.load(outputs(kfp_local, step.name, transfer.name.lower()))
            expected = kernel.ns[transfer.name]
            assert json.dumps(value, default=list) == json.dumps(expected, default=list), transfer.name
    assert marshal.load(outputs(kfp_local, "train", "model"))["first"] == 3  # an int stays an int

    metadata = json.loads(outputs(kfp_local, "train", "executor_output.json").read_text())["artifacts"]
    (metrics,) = metadata["kale_metrics"]["artifacts"]
    assert metrics["metadata"] == {"acc": kernel.ns["acc"]}
    (model,) = metadata["model"]["artifacts"]
    assert model["metadata"]["backend"] == plan.steps["train"].outputs[0].backend

    report = outputs(kfp_local, "report", "kale_report").read_text()
    assert "&lt;b&gt;total&lt;/b&gt; 9.0" in report  # the printed output, escaped
    assert "print(&quot;&lt;b&gt;total&lt;/b&gt;&quot;" in report


def test_parameters_reach_the_steps_with_their_types(kernel, kfp_local, tmp_path):
    from kfp import components

    plan = recorded_plan(kernel)
    path = compile_pipeline(plan, tmp_path / "pipeline.yaml")
    pipeline = components.load_component_from_file(str(path))
    pipeline(n=2, layers=json.dumps([7, 5]))
    assert marshal.load(outputs(kfp_local, "load", "x")).tolist() == [0.0, 1.5]
    assert marshal.load(outputs(kfp_local, "load", "sizes")) == [7, 5]
    model = marshal.load(outputs(kfp_local, "train", "model"))
    assert model["first"] == 7 and type(model["first"]) is int


def test_a_failing_step_fails_the_kfp_task_with_its_error(kernel, kfp_local, tmp_path, capfd):
    from kfp import components

    plan = recorded_plan(kernel, NOTEBOOK[:3] + ["%%step boom\nratio = len(sizes) / (n - 3)"])
    pipeline = components.load_component_from_file(str(compile_pipeline(plan, tmp_path / "pipeline.yaml")))
    with pytest.raises(RuntimeError, match="boom"):
        pipeline(n=3)
    logs = "".join(capfd.readouterr())  # kfp.local relays the task's output
    assert "step 'boom' failed: ZeroDivisionError: division by zero" in logs
