"""Finding the notebook file the kernel runs, and the order of its cells.

Jupyter servers tell kernels their notebook's path in ``JPY_SESSION_NAME``; VS Code
sets ``__vsc_ipynb_file__`` in the namespace.  Cells are matched by their ids.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def find_notebook(configured: str | None, namespace: dict) -> Path | None:
    for candidate in (configured, namespace.get("__vsc_ipynb_file__"), os.environ.get("JPY_SESSION_NAME")):
        if candidate and str(candidate).endswith(".ipynb") and Path(candidate).is_file():
            return Path(candidate).resolve()
    return None


def cell_order(path: Path | None) -> dict[str, int]:
    """cell id -> position in the saved notebook; empty when unknown or unreadable."""
    if path is None:
        return {}
    try:
        cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
    except (OSError, ValueError):
        return {}
    return {c["id"]: i for i, c in enumerate(cells) if isinstance(c, dict) and c.get("id")}
