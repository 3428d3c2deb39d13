"""``%kale_run --sweep NAME=V1,V2,...``: the grid of parameter points a sweep runs, checked all at once.

Each ``--sweep`` gives one parameter's values, as comma-separated literals (``lr=0.1,0.01``) or a
Python list literal (``"lr=[0.1, 0.01]"``, for values holding commas); several ``--sweep`` options
make the grid of every combination, in the order given (the last one varies fastest).  A value must
have its parameter's type: a whole number for a parameter whose default is one, a number for a
float, ``True``/``False`` for a bool, the same kind of container for a list, tuple or dict; a text
parameter takes the text as written.  Pure: no I/O, no IPython.
"""

from __future__ import annotations

import ast
import itertools
import math
from dataclasses import dataclass

from ..errors import ValidationError

GRID_MAX = 256  # points; beyond it a sweep floods the machine and the run store, so it is refused


@dataclass(frozen=True)
class Grid:
    """The swept parameters and every point (parameter -> value), in grid order."""

    names: tuple[str, ...]
    points: tuple[dict, ...]

    def overrides(self, point: dict, parameters: dict) -> dict[str, str]:
        """``point`` as ``--param`` texts the planner reads back to the same values."""
        return {name: value if isinstance(parameters[name], str) else repr(value) for name, value in point.items()}


def parse_grid(options: list[str], parameters: dict, params: dict[str, str] | None = None) -> Grid:
    """The grid of ``--sweep`` ``options`` over the notebook's ``parameters`` (name -> default), or a
    :class:`ValidationError` naming every problem, one sentence each."""
    problems: list[str] = []
    axes: dict[str, list] = {}
    for option in options:
        name, sep, text = option.partition("=")
        name = name.strip()
        if not sep or not name:
            problems.append(f"--sweep {option!r}: write it as NAME=V1,V2,... or \"NAME=[V1, V2]\", "
                            "e.g. --sweep lr=0.1,0.01.")
            continue
        if name not in parameters:
            known = ", ".join(parameters) or "none"
            problems.append(f"--sweep {name}: there is no parameter '{name}' in the %%parameters cells "
                            f"(known: {known}); sweep a parameter.")
            continue
        if name in axes:
            problems.append(f"--sweep {name} is given twice; list all its values in one --sweep.")
            continue
        if name in (params or {}):
            problems.append(f"--sweep {name} and --param {name} both set '{name}'; keep one.")
            continue
        values, problem = _values(name, text.strip(), parameters[name])
        if problem:
            problems.append(problem)
            continue
        axes[name] = values
    if not options:
        problems.append("--sweep needs at least one NAME=V1,V2,... option.")
    size = math.prod(len(v) for v in axes.values()) if axes else 0
    if not problems and size > GRID_MAX:
        shape = " × ".join(f"{len(v)} {n}" for n, v in axes.items())
        problems.append(f"--sweep: the grid has {size:,} points ({shape}), more than the {GRID_MAX} one sweep "
                        "may run; sweep fewer values, or split it into several sweeps.")
    if problems:
        raise ValidationError(*problems)
    names = tuple(axes)
    points = tuple(dict(zip(names, combo)) for combo in itertools.product(*axes.values()))
    return Grid(names, points)


def _values(name: str, text: str, default) -> tuple[list, str]:
    """(the values of ``--sweep name=text``, a problem sentence or '')."""
    if text.startswith("["):
        try:
            values = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return [], (f"--sweep {name}={text}: not a Python list of literals; write e.g. "
                        f"\"{name}=[0.1, 0.01]\".")
        if not isinstance(values, list):
            return [], f"--sweep {name}={text}: not a Python list of literals; write e.g. \"{name}=[0.1, 0.01]\"."
    elif isinstance(default, str):
        values = [v.strip() for v in text.split(",")] if text else []
    else:
        values = [_literal(v.strip()) for v in text.split(",")] if text else []
    if not values:
        return [], f"--sweep {name}: the grid is empty (no values given); list one or more, e.g. --sweep {name}=1,2."
    unique = []
    for value in values:
        if value not in unique:
            unique.append(value)
    bad = [v for v in unique if not _fits(v, default)]
    if bad:
        kind, plural = _kind(default)
        return [], (f"--sweep {name}: {bad[0]!r} is not {kind} like the parameter's default {default!r}; "
                    f"give {plural}.")
    return unique, ""


def _literal(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # stays text, which only a text parameter accepts


def _fits(value, default) -> bool:
    if default is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, int):
        return isinstance(value, int)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and math.isfinite(value)
    return type(value) is type(default)


def _kind(default) -> tuple[str, str]:
    """What a value must be, and what to give, in words."""
    if isinstance(default, bool):
        return "True or False", "True or False"
    if isinstance(default, int):
        return "a whole number", "whole numbers"
    if isinstance(default, float):
        return "a finite number", "finite numbers"
    kind = type(default).__name__
    return f"a {kind}", f"{kind} literals"
