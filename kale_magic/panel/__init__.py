"""The deployment panel: a live view of a run's :class:`~kale_magic.run.state.RunState`.

``show(state)`` is the one entry point (``%kale_run`` calls it, foreground or
``--background`` alike: views redraw from whichever thread changes the state).
It picks the richest view the kernel can show:

* ``widget`` — ipywidgets rows in a notebook kernel, replaced by the static
  panel when the run ends so the saved notebook keeps the final state;
* ``html`` — a display updated in place (notebook kernel, no ipywidgets);
* ``text`` — one line per change (terminal IPython, plain Python).
"""

from __future__ import annotations

import importlib.util
import os

from ..run.state import RunState
from .modes import MODES
from .render import Links, StateReport, render_html, render_text

__all__ = ["show", "listener", "pick_mode", "Links", "StateReport", "render_html", "render_text", "MODES"]


def pick_mode(shell=None) -> str:
    """``widget`` in an ipykernel with ipywidgets importable, ``html`` without it, else ``text``."""
    if shell is None:
        from IPython import get_ipython

        shell = get_ipython()
    if shell is None or not type(shell).__module__.startswith("ipykernel"):
        return "text"
    return "widget" if importlib.util.find_spec("ipywidgets") else "html"


def show(state: RunState, *, mode: str = "auto", notebook_dir: str | os.PathLike | None = None):
    """Show ``state`` live and return the view (its repr is the current state)."""
    from ..errors import KaleError
    from .views import DisplayView, TextView, WidgetView

    if mode not in MODES:
        raise KaleError(f"Unknown panel mode {mode!r}; use one of {', '.join(MODES)}.")
    if mode == "auto":
        mode = pick_mode()
    view = {"widget": WidgetView, "html": DisplayView, "text": TextView}[mode]
    return view(state, Links(notebook_dir, _file_server())).start()


def _file_server():
    """The Jupyter server this kernel's links may point at (kale_magic.server), if any."""
    from IPython import get_ipython

    from ..server.address import FileServer

    shell = get_ipython()
    return FileServer.for_kernel(os.environ, shell.user_ns if shell is not None else None)


def listener(mode: str = "auto", notebook_dir: str | os.PathLike | None = None):
    """A state listener that shows the panel on the run's first event (for code that creates the state)."""
    views = []

    def on_change(state: RunState, event: str) -> None:
        if not views:
            views.append(show(state, mode=mode, notebook_dir=notebook_dir))

    on_change.view = "the panel"  # how the run names it if it fails
    return on_change
