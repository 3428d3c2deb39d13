"""The plan as text: what ``%kale_show`` prints and the Validate task links to."""

from __future__ import annotations

from ..files import human_size
from .model import Plan


def plan_text(plan: Plan) -> str:
    lines = [f"Pipeline '{plan.pipeline}' ({len(plan.steps)} steps, order: {plan.order_source})"]
    if plan.parameters:
        lines.append("Parameters: " + ", ".join(f"{k}={v!r}" for k, v in plan.parameters.items()))
    lines.append("Steps:")
    for step in plan.steps.values():
        after = f" (after {', '.join(step.parents)})" if step.parents else " (root)"
        extra = f"; parameters: {', '.join(step.parameters)}" if step.parameters else ""
        extra += f"; metrics: {', '.join(step.metrics)}" if step.metrics else ""
        extra += f"; reads: {', '.join(step.options.reads)}" if step.options.reads else ""
        if step.foreach:
            loop = step.foreach
            extra += (f"; once per item: --foreach {loop.var} in {loop.name}"
                      + (f", continuing {', '.join(loop.continues)} item by item" if loop.continues else ""))
        extra += f"; runs only if {step.options.condition}" if step.options.condition else ""
        lines.append(f"  {step.name}{after}{extra}")
    flows = plan.flows()
    if flows:
        lines.append("Edges:")
    for producer, consumer, names in flows:
        long = "" if producer in plan.steps[consumer].parents else " (a long edge: past the steps between them)"
        condition = plan.steps[consumer].options.condition
        long += f" [if {condition}]" if condition and not long else ""
        lines.append(f"  {producer} -> {consumer}: {', '.join(names) or '(order only)'}{long}")
    consumers: dict = {}  # (producer, name) -> (the value, the steps reading it in plan order)
    for step in plan.steps.values():
        for t in step.inputs:
            consumers.setdefault((t.producer, t.name), (t, []))[1].append(step.name)
    if consumers:
        lines.append("Values:")
        for t, readers in consumers.values():
            lines.append(f"  {t.name}: {t.type_name}, {human_size(t.size)}, {t.backend} backend, "
                         f"{t.producer} -> {', '.join(readers)}")
    if plan.metrics:
        lines.append("Metrics: " + ", ".join(plan.metrics))
    if plan.notes:
        lines.append("Notes:")
        lines += [f"  {note}" for note in plan.notes]
    return "\n".join(lines)
