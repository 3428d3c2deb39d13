"""A ``--foreach VAR in NAME`` cell in the kernel: its body once per item, then lists, as in a pipeline.

The kernel must end where a run ends (``run.load(name)`` equals the kernel's value), so the
cell does what the engines do: the body runs once per item with VAR bound to it, and each
name it produces is then bound to the list of the items' values, in item order.  A later
cell with the same clause continues item by item: during its item i, the names the earlier
cells of that clause produced hold their item i's values again.
"""

from __future__ import annotations

from typing import Callable

from IPython.core.error import UsageError

from ..errors import KaleError

_UNSET = object()


class KernelLoops:
    """What the ``--foreach`` cells of one kernel produced, per clause: name -> the items' values."""

    def __init__(self):
        self.lists: dict[tuple[str, str], dict[str, list]] = {}

    def reset(self) -> None:
        self.lists.clear()

    def run(self, namespace: dict, step: str, clause: tuple[str, str], python: str,
            run_body: Callable[[], bool]) -> bool:
        """Run the body (``run_body``, True when it succeeded) once per item; False after the first failure
        (the names the earlier cells bound are restored, the produced ones are left as the failure left them)."""
        from ..plan import analysis
        from ..plan.planner import is_bookkeeping
        from ..step.foreach import items

        var, over = clause
        if over not in namespace:
            raise UsageError(f"%%step {step}: --foreach {var} in {over}: '{over}' is not defined in the kernel; "
                             "run the cell that produces it first.")
        try:
            values = items(namespace[over], step, over)
        except KaleError as exc:
            raise UsageError(str(exc)) from None
        # the lists of this clause still bound as the earlier cells left them, one value per item
        continued = {name: values_ for name, values_ in self.lists.get(clause, {}).items()
                     if len(values_) == len(values) and namespace.get(name) is values_}
        produced: dict[str, list] = {}
        before_var = namespace.get(var, _UNSET)
        try:
            for index, item in enumerate(values):
                for name, values_ in continued.items():
                    namespace[name] = values_[index]
                namespace[var] = item
                ids = {name: id(value) for name, value in namespace.items()}
                if not run_body():
                    return False
                for name, value in namespace.items():
                    if name not in produced and ids.get(name) != id(value) and name != var \
                            and not is_bookkeeping(name):
                        produced[name] = [None] * index  # first produced by this item
                for name, values_ in produced.items():
                    values_.append(namespace.get(name))
        finally:
            for name, values_ in continued.items():
                namespace[name] = values_
            if before_var is _UNSET:
                namespace.pop(var, None)
            else:
                namespace[var] = before_var
        if not values:  # no item ran: what the body would produce, read from its code
            names = analysis.analyze([f"for {var} in {over}:\n    pass", python]).writes - {var}
            produced = {name: [] for name in sorted(names) if not is_bookkeeping(name)}
        namespace.update(produced)
        self.lists[clause] = {**continued, **produced}
        return True
