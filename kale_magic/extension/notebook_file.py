"""Which notebook the kernel runs: its file, the order of its cells, and its name.

Frontends say which file a kernel runs: Jupyter servers in ``JPY_SESSION_NAME``,
VS Code in ``__vsc_ipynb_file__``, or the user with ``Kale.notebook_path``.
nbclient, nbconvert and papermill say nothing, but start the kernel in the
notebook's folder: there, the ``.ipynb`` file that holds every recorded cell (by
cell id, or by its text) is the notebook.  When no file can be found, the
notebook is named by a fingerprint of its step names, so that different
notebooks never share a name in the run store and the cache.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import KaleError
from ..ipynb import read_notebook
from ..plan.planner import default_pipeline_name

FINGERPRINT = "pipeline-"


@dataclass(frozen=True)
class NotebookFile:
    """The notebook as found: ``path`` None when no file holds the recorded cells."""

    path: Path | None
    how: str  # how it was found, for %kale_show
    name: str  # the pipeline's name unless --pipeline says otherwise
    order: dict[str, int] = field(default_factory=dict)  # cell id -> position in the file

    def describe(self) -> str:
        """What ``%kale_show`` says about the notebook's identity."""
        if self.path is not None:
            shown = os.path.relpath(self.path) if self.path.parent == Path.cwd().resolve() else self.path
            return f"Notebook: {shown} ({self.how}); its runs and cached steps go by '{self.name}'"
        return (f"Notebook: no file found ({self.how}); its runs and cached steps go by '{self.name}', a "
                "fingerprint of its step names; to use the notebook's own name, "
                "%config Kale.notebook_path = 'NAME.ipynb'")


@dataclass(frozen=True)
class _Cells:
    """What matching needs of a notebook file: its cell ids (in order) and annotated cells' text."""

    order: dict[str, int]
    annotated: frozenset[tuple[str, str]]  # (magic, body) of each %%magic cell


class NotebookFinder:
    """Finds the notebook file; reads each candidate file once per change (by size and mtime)."""

    def __init__(self):
        self._read: dict[Path, tuple[tuple, _Cells | None]] = {}

    @staticmethod
    def named(configured: str | None, namespace: dict) -> tuple[Path, str] | None:
        """The file the user or the frontend names, and who named it (no folder is searched)."""
        candidates = (("Kale.notebook_path", configured), ("VS Code", namespace.get("__vsc_ipynb_file__")),
                      ("the Jupyter server", os.environ.get("JPY_SESSION_NAME")))
        for how, candidate in candidates:
            if candidate and str(candidate).endswith(".ipynb") and Path(candidate).is_file():
                return Path(candidate).resolve(), f"from {how}"
        return None

    def find(self, configured: str | None, namespace: dict, cells) -> NotebookFile:
        cells = list(cells)
        named = self.named(configured, namespace)
        if named is not None:
            return self._found(*named, cells)
        matched = self._match(Path.cwd(), cells)
        if matched is not None:
            return self._found(matched, "matched by its cells in the kernel's working directory", cells)
        steps = sorted({c.step for c in cells if c.kind == "step"})
        digest = hashlib.sha256("\n".join(steps).encode()).hexdigest()[:8]
        return NotebookFile(None, "the frontend does not say, and no .ipynb file in the kernel's working "
                            "directory holds the recorded cells", FINGERPRINT + digest)

    def _found(self, path: Path, how: str, cells) -> NotebookFile:
        read = self._cells(path)
        order = read.order if read else {}
        if not any(c.cell_id in order for c in cells):
            order = {}  # the file does not list these cells (not saved yet): execution order
        return NotebookFile(path, how, default_pipeline_name(path), order)

    def _match(self, folder: Path, cells) -> Path | None:
        """The file holding every recorded cell; among copies, the shortest name (nbconvert writes
        NAME.nbconvert.ipynb beside NAME.ipynb), then the oldest."""
        if not cells:
            return None
        matches = []
        for path in folder.glob("*.ipynb"):
            read = self._cells(path)
            if read and all(c.cell_id in read.order or (c.kind, c.source.rstrip("\n")) in read.annotated
                            for c in cells):
                matches.append((len(path.name), path.stat().st_mtime_ns, path))
        return min(matches)[2].resolve() if matches else None

    def _cells(self, path: Path) -> _Cells | None:
        try:
            info = path.stat()
        except OSError:
            return None
        signature = (info.st_size, info.st_mtime_ns)
        known = self._read.get(path)
        if known is None or known[0] != signature:
            known = self._read[path] = (signature, _read_cells(path))
        return known[1]


def _read_cells(path: Path) -> _Cells | None:
    try:
        cells = read_notebook(path).cells
    except KaleError:  # not a notebook this kernel could be running
        return None
    order, annotated = {}, set()
    for i, cell in enumerate(cells):
        if cell.get("id"):
            order[cell["id"]] = i
        first, _, body = str(cell.get("source", "")).partition("\n")
        if cell.get("cell_type") == "code" and first.startswith("%%") and first[2:].split():
            annotated.add((first[2:].split()[0], body.rstrip("\n")))
    return _Cells(order, frozenset(annotated))
