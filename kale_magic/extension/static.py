"""The pipeline a notebook's cell sources describe, found without running them.

``kale-magic compile`` has no kernel: it reads the magic lines the way the magics
parse them, hands the recorded cells to the same planner as ``%kale_run`` with an
empty namespace, and lists what a live kernel would have known better: the type
of every value that flows (so its backend is picked from the value when the step
saves it) and the names that code creates in ways the AST cannot see.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ValidationError
from ..plan.session import CELL_KINDS, RecordedCell, StepOptions, cell_key
from . import arguments

_CELL_MAGIC = re.compile(r"^%%(\w+)[ \t]*(.*)$")
#: A ``%kale_run`` line and its options (in a cell, after ``run =``, anywhere on a line).
KALE_RUN = re.compile(r"%kale_run\b([^\n]*)")
_CONFIG = re.compile(r"^\s*%config\s+Kale\.(\w+)\s*=\s*(.+?)\s*$", re.MULTILINE)
# Code whose effect on global names only shows when it runs.
_DYNAMIC_CALLS = {"exec", "eval", "globals", "locals", "vars", "setattr", "__import__"}


@dataclass
class StaticNotebook:
    """The annotations a notebook's sources hold."""

    cells: list[RecordedCell] = field(default_factory=list)
    run_line: str = ""  # options of the notebook's first %kale_run, as typed
    config: dict[str, object] = field(default_factory=dict)  # Kale.<trait> = literal, from %config lines


def read_annotations(nb) -> StaticNotebook:
    """Every annotated code cell as the magics would record it, in notebook order."""
    from IPython.core.inputtransformer2 import TransformerManager

    transform = TransformerManager().transform_cell
    found = StaticNotebook()
    for index, cell in enumerate(nb.cells, 1):
        if cell.cell_type != "code":
            continue
        source = cell.source.lstrip("\n")
        for trait, value in _CONFIG.findall(source):
            found.config[trait] = _config_value(trait, value, index)
        if not found.run_line and (run := KALE_RUN.search(source)):
            found.run_line = run.group(1).strip()
        match = _CELL_MAGIC.match(source.split("\n", 1)[0])
        if not match or match.group(1) not in CELL_KINDS:
            continue
        kind, line = match.groups()
        body = source.split("\n", 1)[1] if "\n" in source else ""
        step, options = _step_line(line, index) if kind == "step" else (None, StepOptions())
        found.cells.append(RecordedCell(
            kind, body, transform(body), cell_key(kind, step, cell.get("id"), body), len(found.cells),
            cell.get("id"), step, options))
    return found


def _step_line(line: str, index: int) -> tuple[str, StepOptions]:
    """Parse and check ``%%step`` arguments with the magic's own parser and checks."""
    args = _parse(arguments.step, line, f"cell {index}")
    return args.name, _checked(lambda: arguments.step_options(args), f"cell {index}")


def run_arguments(line: str):
    """The notebook's ``%kale_run`` options, parsed by the magic's own parser."""
    return _parse(arguments.kale_run, line, "the %kale_run line")


def _parse(spec, line: str, where: str):
    return _checked(lambda: arguments.parse(spec, line), where)


def _checked(read, where: str):
    """``read()``, its ``UsageError`` as the ValidationError of the cell ``where``."""
    from IPython.core.error import UsageError

    try:
        return read()
    except UsageError as exc:
        raise ValidationError(f"{where}: {exc}") from None


def _config_value(trait: str, text: str, index: int):
    """The literal a ``%config Kale.<trait>`` line sets, refused as the magics class would refuse it."""
    from traitlets import TraitError

    from .magics import Kale

    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise ValidationError(f"cell {index}: '%config Kale.{trait} = {text}' must be a literal "
                              f"for compile to read it without running the notebook.") from None
    try:
        Kale(None).configure(trait, value)
    except TraitError as exc:
        if "has no setting" not in str(exc):  # an unknown name is left to the run, as %config leaves it
            raise ValidationError(f"cell {index}: {exc}") from None
    return value


def static_plan(nb, notebook_path: Path, *, pipeline: str | None = None,
                params: dict[str, str] | None = None):
    """(plan, Kale %config settings, warnings): the pipeline of ``nb`` planned from sources alone."""
    from ..plan.planner import Environment, build_plan, default_pipeline_name

    found = read_annotations(nb)
    run = run_arguments(found.run_line)
    overrides = arguments.parse_params(run.param)
    overrides.update(params or {})
    plan = build_plan(found.cells, Environment.of({}),
                      pipeline=pipeline or run.pipeline or default_pipeline_name(notebook_path),
                      experiment=run.experiment, description=run.description, overrides=overrides,
                      notebook_path=notebook_path, order_source=f"notebook file {notebook_path}")
    return plan, found.config, _warnings(plan, found.cells)


def _warnings(plan, cells: list[RecordedCell]) -> list[str]:
    """Where a live kernel would know more than the sources say, one line per variable or cell."""
    out = []
    for transfer in plan.transfers():
        users = [s.name for s in plan.steps.values() if transfer in s.inputs]
        out.append(f"'{transfer.name}' ({transfer.producer} -> {', '.join(users)}): type unknown "
                   f"without running the notebook; its format is chosen from the value at run time.")
    return out + dynamic_code_warnings(cells)


def dynamic_code_warnings(cells: list[RecordedCell]) -> list[str]:
    """One line per cell whose names only show when it runs (exec, globals(), star imports, magics)."""
    out = []
    for cell in cells:
        hidden = _dynamic_code(cell.python)
        if hidden:
            out.append(f"{cell.label} uses {', '.join(hidden)}: names it creates or reads this way "
                       f"are invisible without running it; check the plan with %kale_show.")
    return out


def _dynamic_code(python: str) -> list[str]:
    from ..plan.analysis import CODE_MAGICS

    try:
        tree = ast.parse(python)
    except SyntaxError:
        return []  # the planner already named the cell's syntax error
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _DYNAMIC_CALLS:
            found.add(f"{node.func.id}()")
        elif isinstance(node, ast.ImportFrom) and any(a.name == "*" for a in node.names):
            found.add(f"from {node.module} import *")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr in ("run_line_magic", "run_cell_magic") and node.args
              and isinstance(node.args[0], ast.Constant) and node.args[0].value not in CODE_MAGICS):
            found.add(f"%{node.args[0].value}")
    return sorted(found)
