"""The oracle: values a run saves equal the values the same cells produced in the kernel."""

from __future__ import annotations

import copy
import re


def values_equal(a, b) -> bool:
    import numpy as np

    if isinstance(a, (list, tuple)) and type(a) is type(b):  # a foreach step's values: item by item
        return len(a) == len(b) and all(values_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and type(a) is type(b):
        return list(a) == list(b) and all(values_equal(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return type(a) is type(b) and a.dtype == b.dtype and np.array_equal(a, b)
    if hasattr(a, "equals") and type(a) is type(b):
        return a.equals(b)
    if isinstance(a, float) and a != a:
        return isinstance(b, float) and b != b
    if type(a) is type(b) and type(a).__eq__ is object.__eq__ and hasattr(a, "__dict__"):
        return values_equal(vars(a), vars(b))  # no equality of its own (a fitted estimator): its state
    return type(a) is type(b) and a == b


def run_cells(kernel, cells: list[str]) -> dict[str, dict]:
    """Run cells in the kernel; after each step cell keep a copy of every user value."""
    after_step: dict[str, dict] = {}
    for i, source in enumerate(cells):
        kernel.run(source, cell_id=f"cell-{i}")
        match = re.match(r"%%step\s+(\S+)", source.strip())
        if match:
            after_step[match.group(1)] = {
                name: _copy(value) for name, value in kernel.ns.items()
                if not name.startswith("_") and name not in kernel.shell.user_ns_hidden
            }
    return after_step


def _copy(value):
    try:
        return copy.deepcopy(value)
    except Exception:
        return value


def check(run, after_step: dict[str, dict]) -> int:
    """Every saved value equals the kernel's value after its producing step; returns how many were checked."""
    assert run.status == "succeeded", run.state.error
    checked = 0
    for transfer in run.plan.transfers():
        expected = after_step[transfer.producer][transfer.name]
        loaded = run.load(transfer.name, step=transfer.producer)
        assert values_equal(loaded, expected), (transfer, loaded, expected)
        checked += 1
    return checked
