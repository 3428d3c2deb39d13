"""A ``--foreach VAR in NAME`` cell in the kernel: its body once per item, then lists, as in a pipeline.

The kernel must end where a run ends (``run.load(name)`` equals the kernel's value), so the
cell does what the engines do: the body runs once per item with VAR bound to it, and each
name it produces is then bound to the list of the items' values, in item order.  A later
cell with the same clause continues item by item: during its item i, the names the earlier
cells of that clause produced hold their item i's values again.  With ``--if`` the condition
is evaluated per item (VAR and the item's own values bound): an item where it is false does not
run, nor do the later cells of the clause for that item, and the lists hold the items that ran.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from IPython.core.error import UsageError

from ..errors import KaleError

_UNSET = object()


@dataclass
class _Clause:
    """What the cells of one clause produced: name -> (the items that produced it, their values)."""

    count: int
    lists: dict[str, tuple[list[int], list]] = field(default_factory=dict)
    skipped: dict[int, tuple[str, str]] = field(default_factory=dict)  # item -> (the item that did not run, why)


class KernelLoops:
    """What the ``--foreach`` cells of one kernel produced, per clause."""

    def __init__(self):
        self.clauses: dict[tuple[str, str], _Clause] = {}

    def reset(self) -> None:
        self.clauses.clear()

    def run(self, namespace: dict, step: str, clause: tuple[str, str], python: str,
            run_body: Callable[[], bool], why_not: Callable[[], str | None] | None = None) -> bool:
        """Run the body (``run_body``, True when it succeeded) once per item whose ``why_not`` (the cell's
        ``--if``, evaluated with the item bound) is None; False after the first failure (the names the
        earlier cells bound are restored, the produced ones are left as the failure left them)."""
        from ..plan import analysis
        from ..plan.planner import is_bookkeeping
        from ..items import items

        var, over = clause
        if over not in namespace:
            raise UsageError(f"%%step {step}: --foreach {var} in {over}: '{over}' is not defined in the kernel; "
                             "run the cell that produces it first.")
        try:
            values = items(namespace[over], step, over)
        except KaleError as exc:
            raise UsageError(str(exc)) from None
        earlier = self.clauses.get(clause)
        if earlier is None or earlier.count != len(values):
            earlier = _Clause(len(values))
        # the lists of this clause still bound as the earlier cells left them
        continued = {name: ({item: at for at, item in enumerate(ran)}, values_)
                     for name, (ran, values_) in earlier.lists.items() if namespace.get(name) is values_}
        produced: dict[str, list] = {}
        ran: list[int] = []
        skipped = dict(earlier.skipped)
        before_var = namespace.get(var, _UNSET)
        try:
            for index, item in enumerate(values):
                label = f"{step}[{index}]"
                if index in earlier.skipped:  # an earlier cell of the clause did not run this item
                    first, why = earlier.skipped[index]
                    print(f"kale: step {label} did not run: step '{first}' was skipped ({why})")
                    continue
                for name, (at, values_) in continued.items():
                    if index in at:
                        namespace[name] = values_[at[index]]
                namespace[var] = item
                why = why_not() if why_not else None
                if why:
                    print(f"kale: step {label} did not run: {why}")
                    skipped[index] = (label, why)
                    continue
                ids = {name: id(value) for name, value in namespace.items()}
                if not run_body():
                    return False
                for name, value in namespace.items():
                    if name not in produced and ids.get(name) != id(value) and name != var \
                            and not is_bookkeeping(name):
                        produced[name] = [None] * len(ran)  # first produced by this item
                ran.append(index)
                for name, values_ in produced.items():
                    values_.append(namespace.get(name))
        finally:
            for name, (_, values_) in continued.items():
                namespace[name] = values_
            if before_var is _UNSET:
                namespace.pop(var, None)
            else:
                namespace[var] = before_var
        if not ran:  # no item ran: what the body would produce, read from its code
            names = analysis.analyze([f"for {var} in {over}:\n    pass", python]).writes - {var}
            produced = {name: [] for name in sorted(names) if not is_bookkeeping(name)}
        namespace.update(produced)
        earlier.lists = {**{name: (list(at), values_) for name, (at, values_) in continued.items()},
                         **{name: (ran, values_) for name, values_ in produced.items()}}
        earlier.skipped = skipped
        self.clauses[clause] = earlier
        return True
