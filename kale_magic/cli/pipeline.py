"""``kale-magic run`` by default: run the pipeline a notebook describes, without executing its cells.

The annotations are read from the cell sources as ``kale-magic compile`` reads them
(:mod:`kale_magic.extension.static`) and handed to the very ``%kale_run`` of a
shell in this process, whose namespace is empty: nothing is computed twice, the
notebook's own ``%kale_run`` options and literal ``%config Kale.*`` settings apply,
and each value's format is chosen from the live object by the step that saves it.
Kale's own command line works the same way.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import KaleError, RunFailed


class SettingError(KaleError):
    label = "kale-magic"


def run_pipeline(nb, path: Path, options: str):
    """The Run of the pipeline in ``nb`` (the notebook at ``path``), with ``options`` added to its
    ``%kale_run`` line; a failed run is returned, not raised."""
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    from ..extension.static import dynamic_code_warnings, read_annotations

    found = read_annotations(nb)
    for warning in dynamic_code_warnings(found.cells):
        print(f"kale-magic: warning: {warning}", file=sys.stderr)
    config = Config()
    config.HistoryManager.enabled = False
    shell = InteractiveShell.instance(config=config)
    shell.run_line_magic("load_ext", "kale_magic")
    magics = shell.magics_manager.registry["Kale"]
    _configure(magics, {**found.config, "panel": "text", "notebook_path": str(path)})
    for cell in found.cells:
        magics.session.record(cell)
    try:
        run = shell.run_line_magic("kale_run", f"{found.run_line} {options}")
    except RunFailed as failure:
        return failure.run
    return run.wait()


def _configure(magics, settings: dict) -> None:
    """The notebook's ``%config Kale.NAME = literal`` lines, checked as ``%config`` checks them."""
    from traitlets import TraitError

    for name, value in settings.items():
        try:
            magics.configure(name, value)
        except TraitError as exc:
            if "has no setting" in str(exc):
                raise SettingError(f"%config Kale.{name}: {exc}") from None
            raise SettingError(f"%config Kale.{name} = {value!r}: {exc}") from None
