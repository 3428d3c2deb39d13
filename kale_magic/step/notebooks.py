"""Step notebooks: the cells one step runs, in the order Kale's documentation gives.

parameters (tagged ``parameters``, papermill-compatible) · unmarshal · imports ·
functions · the step's cells · marshal · metrics.  The data cells name variables
only; *where* values live is decided by the engine through the step context, so
the same notebook runs locally and inside a KFP component.

Step notebooks are nbformat v4.5 documents (the tests check them against nbformat's
schema) read and written by :mod:`kale_magic.ipynb`, without importing nbformat.
"""

from __future__ import annotations

from pathlib import Path

from ..ipynb import write_notebook
from ..layout import RunDir
from ..plan import Plan

RUNTIME_IMPORT = "from kale_magic.step import runtime as _kale_rt"


def literal(value) -> str:
    """Python source that evaluates to ``value`` exactly and runs no user text as code.

    ``repr`` round-trips every literal type except non-finite floats ('inf', 'nan').
    """
    if isinstance(value, float) and value != value or value in (float("inf"), float("-inf")):
        return f"float({str(value)!r})"
    if isinstance(value, (list, tuple, set)) and value:
        items = ", ".join(literal(v) for v in value)
        return {list: f"[{items}]", tuple: f"({items},)", set: f"{{{items}}}"}[type(value)]
    if isinstance(value, dict) and value:
        return "{" + ", ".join(f"{literal(k)}: {literal(v)}" for k, v in value.items()) + "}"
    return repr(value)


def parameters_source(values: dict[str, object]) -> str:
    return "\n".join(f"{name} = {literal(value)}" for name, value in values.items())


def step_notebook(plan: Plan, step_name: str):
    """The step's notebook as a dict; cell ids are deterministic so the same plan gives the same bytes."""
    step = plan.steps[step_name]
    values = plan.parameters
    cells = []

    def add(source: str, role: str, tags=()):
        metadata = {"kale": {"role": role}}
        if tags:
            metadata["tags"] = list(tags)
        cells.append({"cell_type": "code", "id": f"{role}-{len(cells)}", "metadata": metadata,
                      "source": source, "outputs": [], "execution_count": None})

    if step.parameters:
        add(parameters_source({p: values[p] for p in step.parameters}), "parameters", ("parameters",))
    names = [t.name for t in step.inputs]
    unmarshal = f"{RUNTIME_IMPORT}\n_kale_rt.load_inputs(globals(), {names!r})"
    if step.foreach:  # one item per instance: the engine says which (StepContext.item); in the same cell,
        # as each cell run costs an item ~3 ms of IPython's own work
        unmarshal += f"\n_kale_rt.bind_item(globals(), {step.foreach.var!r}, {step.foreach.name!r})"
    add(unmarshal, "unmarshal")
    for source in plan.imports:
        add(source, "imports")
    for source in plan.functions:
        add(source, "functions")
    for source in step.cells:
        add(source, "step")
    add(f"_kale_rt.save_outputs(globals(), {[t.name for t in step.outputs]!r})", "marshal")
    if step.metrics:
        add(f"_kale_rt.log_metrics(globals(), {list(step.metrics)!r})", "metrics")

    return {
        "nbformat": 4, "nbformat_minor": 5, "cells": cells,
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
            "kale": {"pipeline": plan.pipeline, "step": step_name},
        },
    }


def write_step_notebooks(plan: Plan, run_dir: RunDir) -> dict[str, Path]:
    """The Compile task's notebooks, one per step, with the plan's parameter values."""
    paths = {name: run_dir.notebook(name) for name in plan.steps}
    run_dir.notebooks.mkdir(parents=True, exist_ok=True)
    for name, path in paths.items():
        write_notebook(step_notebook(plan, name), path)
    return paths
