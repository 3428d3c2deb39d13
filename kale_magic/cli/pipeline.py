"""``kale-magic run`` by default: run the pipeline a notebook describes, without executing its cells.

The annotations are read from the cell sources as ``kale-magic compile`` reads them
(:mod:`kale_magic.source.static`) and recorded into the magics of a shell in this
process, whose namespace is empty; the notebook's ``%kale_run`` options, parsed by the
magic's own parser, with the command line's over them, go to the same ``Kale.start`` —
and so the same ``start_run`` — as ``%kale_run``: nothing is computed twice, literal
``%config Kale.*`` settings apply, and each value's format is chosen from the live
object by the step that saves it.
Kale's own command line works the same way.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import KaleError, RunFailed


class SettingError(KaleError):
    label = "kale-magic"


def run_pipeline(nb, path: Path, options: dict) -> tuple[list, bool]:
    """(runs, whether a failed run stops the notebook): one Run per ``%kale_run`` line of ``nb`` (the
    notebook at ``path``), in order, each with the cells above it recorded, its options with ``options``
    (option name -> value; ``param`` and ``sweep`` values are added) over them, as "Run All" would run them.  A failed
    run is returned, not raised; it ends the list unless the notebook sets ``Kale.stop_on_failure = False``."""
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    from ..source.static import RunLine, dynamic_code_warnings, read_annotations, run_arguments

    found = read_annotations(nb)
    for warning in dynamic_code_warnings(found.cells):
        print(f"kale-magic: warning: {warning}", file=sys.stderr)
    config = Config()
    config.HistoryManager.enabled = False
    shell = InteractiveShell.instance(config=config)
    shell.run_line_magic("load_ext", "kale_magic")
    magics = shell.magics_manager.registry["Kale"]
    _configure(magics, {**found.config, "panel": "text", "notebook_path": str(path)})
    runs, recorded = [], 0
    for line in found.runs or [RunLine("", len(nb.cells), len(found.cells))]:
        for cell in found.cells[recorded:line.recorded]:
            magics.session.record(cell)
        recorded = line.recorded
        args = run_arguments(line.options)
        for name, value in options.items():
            setattr(args, name, getattr(args, name) + value if name in ("param", "sweep") else value)
        try:
            run = magics.start(args).wait()
        except RunFailed as failure:
            run = failure.run
        runs.append(run)
        if run.status == "failed" and magics.stop_on_failure:
            break
    return runs, magics.stop_on_failure


def _configure(magics, settings: dict) -> None:
    """The notebook's ``%config Kale.NAME = literal`` (and ``Kfp.NAME``) lines, checked as ``%config``
    checks them."""
    from traitlets import TraitError

    for name, value in settings.items():
        qualified = name if "." in name else f"Kale.{name}"
        try:
            magics.configure(name, value)
        except TraitError as exc:
            if "has no setting" in str(exc):
                raise SettingError(f"%config {qualified}: {exc}") from None
            raise SettingError(f"%config {qualified} = {value!r}: {exc}") from None
