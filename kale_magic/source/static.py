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
from ..extension import arguments

_CELL_MAGIC = re.compile(r"^%%(\w+)[ \t]*(.*)$")
#: A ``%kale_run`` line and its options (in a cell, after ``run =``, anywhere on a line).
KALE_RUN = re.compile(r"%kale_run\b([^\n]*)")
_CONFIG = re.compile(r"^\s*%config\s+(\w+)\.(\w+)\s*=\s*(.+?)\s*$", re.MULTILINE)
# Code whose effect on global names only shows when it runs.
_DYNAMIC_CALLS = {"exec", "eval", "globals", "locals", "vars", "setattr", "__import__"}
SHOWN_NAMES = 8  # values named in compile's one warning about unknown types


@dataclass(frozen=True)
class RunLine:
    """One ``%kale_run`` line: its options as typed, its cell, and how many annotated cells precede it (what
    the notebook has recorded when "Run All" reaches it)."""

    options: str
    cell: int
    recorded: int


@dataclass
class StaticNotebook:
    """The annotations a notebook's sources hold."""

    cells: list[RecordedCell] = field(default_factory=list)
    runs: list[RunLine] = field(default_factory=list)  # every %kale_run line, in notebook order
    config: dict[str, object] = field(default_factory=dict)  # trait (Kale's) or Kfp.<trait> -> literal

    @property
    def run_line(self) -> str:
        """The options of the first ``%kale_run`` (what ``kale-magic compile`` builds)."""
        return self.runs[0].options if self.runs else ""


def read_annotations(nb) -> StaticNotebook:
    """Every annotated code cell as the magics would record it, in notebook order."""
    from IPython.core.inputtransformer2 import TransformerManager

    from .. import engines

    transform = TransformerManager().transform_cell
    found = StaticNotebook()
    ours = {"Kale"} | {t.settings_class().__name__ for t in engines.registry if t.settings_class() is not None}
    for index, cell in enumerate(nb.cells, 1):
        if cell.cell_type != "code":
            continue
        source = cell.source.lstrip("\n")
        for owner, trait, value in _CONFIG.findall(source):
            if owner in ours:  # other classes' lines (InlineBackend, ...) are the kernel's business
                name = trait if owner == "Kale" else f"{owner}.{trait}"
                found.config[name] = _config_value(name, value, index)
        found.runs += [RunLine(run.group(1).strip(), index, len(found.cells)) for run in KALE_RUN.finditer(source)]
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
    """The literal a ``%config Kale.<trait>`` (or ``Kfp.<trait>``: ``trait`` is then ``Kfp.<trait>``) line
    sets, refused as the magics class would refuse it."""
    from traitlets import TraitError

    from ..extension.magics import Kale

    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        qualified = trait if "." in trait else f"Kale.{trait}"
        raise ValidationError(f"cell {index}: '%config {qualified} = {text}' must be a literal "
                              f"for compile to read it without running the notebook.") from None
    try:
        Kale(None).configure(trait, value)
    except TraitError as exc:
        if "has no setting" not in str(exc):  # an unknown name is left to the run, as %config leaves it
            raise ValidationError(f"cell {index}: {exc}") from None
    return value


def static_plan(nb, notebook_path: Path, *, pipeline: str | None = None, params: list[str] = ()):
    """(plan, Kale %config settings, warnings): the pipeline of ``nb`` planned from sources alone;
    ``params`` (NAME=VALUE texts, as ``--param`` takes them) over the notebook's ``%kale_run --param``."""
    from ..plan.planner import Environment, build_plan, default_pipeline_name

    found = read_annotations(nb)
    run = run_arguments(found.run_line)
    overrides = arguments.parse_params(run.param)
    overrides.update(arguments.parse_params(params))
    plan = build_plan(found.cells, Environment.of({}),
                      pipeline=pipeline or run.pipeline or default_pipeline_name(notebook_path),
                      experiment=run.experiment, description=run.description, overrides=overrides,
                      notebook_path=notebook_path, order_source=f"notebook file {notebook_path}")
    return plan, found.config, _warnings(plan, found.cells)


def _warnings(plan, cells: list[RecordedCell]) -> list[str]:
    """Where a live kernel would know more than the sources say: one line for the untyped values, one per
    note or cell."""
    out = []
    names = [f"'{t.name}'" for t in plan.transfers()]
    if names:  # one line for all of them: the same is true of each
        shown = ", ".join(names[:SHOWN_NAMES]) + (f" and {len(names) - SHOWN_NAMES} more"
                                                  if len(names) > SHOWN_NAMES else "")
        out.append(f"{len(names)} value{'s' if len(names) > 1 else ''} flow between steps ({shown}) with "
                   "types unknown without running the notebook: each one's format is chosen from the value "
                   "when its step saves it, and its KFP artifact type is Artifact.")
    return out + list(plan.notes) + dynamic_code_warnings(cells)


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
