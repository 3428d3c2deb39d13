"""Kale's Katib search space (``kubeflow_notebook.katib_metadata``) as a suggested ``%kale_run --sweep`` line.

Kale tuned pipeline parameters with a Katib experiment: per parameter a ``parameterType``
(``int``, ``double``, ``categorical``, ``discrete``) and a ``feasibleSpace`` (``min``/``max``/
``step``, or a ``list``), an objective metric and a search algorithm.  kale-magic sweeps a grid,
so each parameter becomes the values of one ``--sweep``: a list as is, a stepped range expanded,
and a continuous range (no step) its two ends, said in a note, as is the algorithm a grid replaces.
The line is written commented out: a converted notebook's "Run All" should not start a sweep
nobody asked for; uncommenting it runs the same search space locally or on KFP.
"""

from __future__ import annotations

import shlex
from decimal import Decimal, InvalidOperation

from ..run.grid import GRID_MAX

MAX_STEPS = 50  # values one stepped range may expand to; more is a continuous range in disguise


def sweep_lines(katib: dict, run_words: str, note, protect=lambda text: text) -> list[str]:
    """Comment lines suggesting the sweep of ``katib`` (Kale's metadata); ``note(text)`` reports what changed,
    ``protect`` keeps the options from IPython's expansion once the line is uncommented."""
    options, size = [], 1
    for parameter in katib.get("parameters") or []:
        name = str(parameter.get("name", "")).lstrip("-")
        values, problem = _values(parameter)
        if problem:
            note(f"Katib parameter {name or '?'}: {problem}")
        if not name or not values:
            continue
        size *= len(values)
        text = ",".join(values)
        options.append(protect(_quote(f"{name}={text}" if all("," not in v for v in values)
                                      else f"{name}=[{', '.join(values)}]")))
    if not options:
        return []
    lines = ["# Katib search space of the Kale notebook, as a grid (uncomment to run it):",
             "# sweep = %kale_run " + " ".join(filter(None, [run_words, *(f"--sweep {o}" for o in options)]))]
    objective = katib.get("objective") or {}
    metric = objective.get("objectiveMetricName")
    if metric:
        mode = "min" if objective.get("type") == "minimize" else "max"
        lines.append(f"# sweep.best({metric!r}, mode={mode!r})")
    algorithm = (katib.get("algorithm") or {}).get("algorithmName")
    if algorithm and algorithm != "grid":
        note(f"Katib's {algorithm} search becomes a grid sweep of every combination ({size} points)")
    if size > GRID_MAX:
        note(f"the suggested sweep has {size} points, more than the {GRID_MAX} a sweep runs; narrow it")
    return lines


def _quote(word: str) -> str:
    """One shell word, in the double quotes a person would write where they are enough."""
    if shlex.quote(word) == word:
        return word
    return f'"{word}"' if not any(c in word for c in '"\\$`') else shlex.quote(word)


def _values(parameter: dict) -> tuple[list[str], str]:
    """(the parameter's values as literals, a note or '')."""
    kind = parameter.get("parameterType")
    space = parameter.get("feasibleSpace") or {}
    if kind in ("categorical", "discrete"):
        values = [str(v) for v in space.get("list") or []]
        if kind == "categorical":
            return [repr(v) for v in values], "" if values else "its list of values is empty; left out"
        return values, "" if values else "its list of values is empty; left out"
    if kind not in ("int", "double"):
        return [], f"type {kind!r} has no grid equivalent; left out"
    try:
        low, high = Decimal(str(space["min"])), Decimal(str(space["max"]))
        step = Decimal(str(space["step"])) if space.get("step") not in (None, "") else None
    except (KeyError, InvalidOperation):
        return [], "its feasibleSpace has no numeric min and max; left out"
    if kind == "int" and step is None:
        step = Decimal(1)
    if step is None or step <= 0 or (high - low) / step >= MAX_STEPS:
        ends = [_number(low, kind), _number(high, kind)]
        return list(dict.fromkeys(ends)), (f"a continuous range {ends[0]}..{ends[-1]}; the suggestion sweeps its ends, "
                                           "add the values between you want")
    values, value = [], low
    while value <= high:
        values.append(_number(value, kind))
        value += step
    return values, ""


def _number(value: Decimal, kind: str) -> str:
    if kind == "int":
        return str(int(value))
    text = format(value.normalize(), "f")
    return text if "." in text else text + ".0"
