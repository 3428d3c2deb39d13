"""Which steps a partial run (``--only``, ``--from``, ``--to``) runs, reuses and leaves alone.

Pure: the plan and the options in, a :class:`Selection` out, or a :class:`KaleError` naming the
option, the step and the fix.  Where the reused values come from is the engine's question
(the local engine asks its step cache); this module only says which steps must supply them.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import KaleError
from .model import Plan

NOT_SELECTED = "not selected"  # what the panel and %kale_runs say of a step a partial run did not run


@dataclass(frozen=True)
class Selection:
    """A partial run: ``run`` the selected steps, ``reuse`` the unselected ones whose values a selected
    step loads (each supplies its saved outputs from an earlier run), leave ``not_run`` alone."""

    option: str  # as the user typed it, e.g. "--only train,evaluate"
    run: tuple[str, ...]
    reuse: tuple[str, ...]
    not_run: tuple[str, ...]

    def subplan(self, plan: Plan) -> Plan:
        """The pipeline of the selected steps alone, for an engine that runs it as it is (valid only
        when nothing is reused: every value a selected step loads is made by a selected step)."""
        from dataclasses import replace

        kept = {name: plan.steps[name] for name in self.run}
        return replace(plan, steps={name: replace(step, parents=tuple(p for p in step.parents if p in kept))
                                    for name, step in kept.items()})

    def needs(self, plan: Plan, step: str) -> tuple[str, str]:
        """(selected step, value) that makes reused step ``step`` necessary, for a refusal's sentence."""
        for name in self.run + self.reuse:
            for transfer in plan.steps[name].inputs:
                if transfer.producer == step:
                    return name, transfer.name
        raise KeyError(step)


def select(plan: Plan, only: tuple[str, ...] = (), start: str | None = None,
           end: str | None = None) -> Selection | None:
    """The selection the options ask for (None: the whole pipeline); ``--from`` and ``--to`` together
    mean the steps between them."""
    if not (only or start or end):
        return None
    if only and (start or end):
        raise KaleError("--only names the steps to run; leave out --from and --to (or use them without --only).")
    for option, names in (("--only", only), ("--from", (start,) if start else ()), ("--to", (end,) if end else ())):
        unknown = [n for n in names if n not in plan.steps]
        if unknown:
            raise KaleError(f"{option} {unknown[0]}: no step named '{unknown[0]}' in this notebook; the steps are "
                            f"{', '.join(plan.steps)}.")
    chosen = set(plan.steps)
    if only:
        chosen = set(only)
    if start:
        chosen &= {start} | _descendants(plan, start)
    if end:
        chosen &= {end} | _ancestors(plan, end)
    option = " ".join(filter(None, (only and f"--only {','.join(only)}", start and f"--from {start}",
                                     end and f"--to {end}")))
    if not chosen:
        raise KaleError(f"{option}: step '{end}' does not come after step '{start}', so no step is between them; "
                        "swap them.")
    reuse = _suppliers(plan, chosen, option)
    order = list(plan.steps)
    return Selection(option, tuple(s for s in order if s in chosen), tuple(s for s in order if s in reuse),
                     tuple(s for s in order if s not in chosen and s not in reuse))


def _suppliers(plan: Plan, chosen: set[str], option: str) -> set[str]:
    """The unselected steps whose saved values the chosen steps load, and their own suppliers (a reused
    step's result is found by its inputs' checksums, which its producers' earlier results give).  A
    supplier that loads a value a chosen step makes now cannot be reused: its result would be stale."""
    reuse: set[str] = set()
    waiting = [t for name in chosen for t in plan.steps[name].inputs if t.producer not in chosen]
    while waiting:
        transfer = waiting.pop()
        if transfer.producer in reuse:
            continue
        reuse.add(transfer.producer)
        for upstream in plan.steps[transfer.producer].inputs:
            if upstream.producer in chosen:
                raise KaleError(f"{option}: step '{transfer.producer}' is not selected but loads "
                                f"'{upstream.name}', which selected step '{upstream.producer}' makes anew, so its "
                                f"earlier result cannot be reused; add {transfer.producer} to the selection.")
            waiting.append(upstream)
    return reuse


def _descendants(plan: Plan, step: str) -> set[str]:
    found: set[str] = set()
    for name, plan_step in plan.steps.items():  # topological: a parent is seen before its children
        if step in plan_step.parents or found & set(plan_step.parents):
            found.add(name)
    return found


def _ancestors(plan: Plan, step: str) -> set[str]:
    found: set[str] = set()
    waiting = list(plan.steps[step].parents)
    while waiting:
        name = waiting.pop()
        if name not in found:
            found.add(name)
            waiting.extend(plan.steps[name].parents)
    return found
