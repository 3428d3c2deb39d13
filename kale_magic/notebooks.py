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
    import nbformat.v4 as v4

    step = plan.steps[step_name]
    values = {**plan.parameters, **(parameters or {})}
    cells = []

    def add(source: str, role: str, tags=()):
        cell = v4.new_code_cell(source, metadata={"kale": {"role": role}})
        if tags:
            cell.metadata["tags"] = list(tags)
        cells.append(cell)

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

    nb = v4.new_notebook(cells=cells)
    nb.metadata.update({
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
        "kale": {"pipeline": plan.pipeline, "step": step_name},
    })
    return nb
