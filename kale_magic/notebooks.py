"""Step notebooks: the cells one step runs, in the order Kale's documentation gives.

parameters (tagged ``parameters``, papermill-compatible) · unmarshal · imports ·
functions · the step's cells · marshal · metrics.  The data cells name variables
only; *where* values live is decided by the engine through the step context, so
the same notebook runs locally and inside a KFP component.
"""

from __future__ import annotations

from .plan import Plan

RUNTIME_IMPORT = "from kale_magic import runtime as _kale_rt"


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


def step_notebook(plan: Plan, step_name: str, parameters: dict[str, object] | None = None):
    """The step's notebook; cell ids are deterministic so the same plan gives the same bytes."""
    import nbformat

    step = plan.steps[step_name]
    values = {**plan.parameters, **(parameters or {})}
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
    add(f"{RUNTIME_IMPORT}\n_kale_rt.load_inputs(globals(), {names!r})", "unmarshal")
    for source in plan.imports:
        add(source, "imports")
    for source in plan.functions:
        add(source, "functions")
    for source in step.cells:
        add(source, "step")
    add(f"_kale_rt.save_outputs(globals(), {[t.name for t in step.outputs]!r})", "marshal")
    if step.metrics:
        add(f"_kale_rt.log_metrics(globals(), {list(step.metrics)!r})", "metrics")

    # Built as plain data: nbformat's per-cell validation was a third of compiling a large pipeline.
    return nbformat.from_dict({
        "nbformat": 4, "nbformat_minor": 5, "cells": cells,
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
            "kale": {"pipeline": plan.pipeline, "step": step_name},
        },
    })
