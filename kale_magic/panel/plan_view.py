"""What ``%kale_show`` displays: the pipeline's graph in a notebook, the plan as text in a terminal.

One object with both representations, so each frontend picks what it can show:
notebook frontends and nbconvert take ``text/html`` (an inline SVG, no script,
no widget state), a terminal prints ``text/plain``, which is the text
``%kale_show`` always printed.
"""

from __future__ import annotations

from ..plan import Plan
from ..plan.report import plan_text
from .graph import graph_html
from .style import esc


class PlanView:
    """A plan shown as a graph (``_repr_html_``) or as text (``repr``); ``notes`` follow both (the cache check)."""

    def __init__(self, plan: Plan, notes: str = ""):
        self.plan = plan
        self.notes = notes

    def __repr__(self) -> str:
        return "\n".join(filter(None, (plan_text(self.plan), self.notes)))

    def _repr_html_(self) -> str:
        plan = self.plan
        facts = [f"<b>{esc(plan.pipeline)}</b>", f"{len(plan.steps)} steps", f"order: {esc(plan.order_source)}"]
        if plan.parameters:
            facts.append("parameters: " + esc(", ".join(f"{k}={v!r}" for k, v in plan.parameters.items())))
        if plan.metrics:
            facts.append("metrics: " + esc(", ".join(plan.metrics)))
        notes = (f'<pre class="kale-plan-notes" style="font-size:11px;margin:4px 6px">{esc(self.notes)}</pre>'
                 if self.notes else "")
        return (f'<div class="kale-plan" style="border:1px solid #ddd;border-radius:4px;max-width:100%">'
                f'<div class="kale-header" style="padding:4px 6px;border-bottom:1px solid #ddd">Kale pipeline '
                + " · ".join(facts) + "</div>" + graph_html(plan) + notes
                + '<details style="margin:0 6px 4px"><summary style="cursor:pointer;font-size:11px">'
                f'as text</summary><pre style="font-size:11px">{esc(plan_text(plan))}</pre></details></div>')
