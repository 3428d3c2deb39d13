"""``Kale.on_run_end``: user code called with every finished ``Run``, in the kernel.

The hook is a callable, or the name of an entry point in the group ``kale_magic.hooks``
(a package that posts to a team's chat registers one; users set its name).  It is called
once per run, after every listener, so the panel has drawn its final state and the run
store holds the run's end: a foreground run calls it in the kernel's main thread when
``%kale_run`` returns, a ``--background`` run in the run's thread when it ends.

A hook is the user's code reporting on a run, not part of the run: one that raises is
reported in one line on stderr and the run keeps its status.
"""

from __future__ import annotations

import sys
import threading
from typing import TYPE_CHECKING, Callable

from ..errors import KaleError

if TYPE_CHECKING:
    from .handle import Run

GROUP = "kale_magic.hooks"
Hook = Callable[["Run"], object]


def entry_point_names() -> list[str]:
    from importlib.metadata import entry_points

    return sorted({ep.name for ep in entry_points(group=GROUP)})


def resolve(value) -> Hook | None:
    """The callable that ``value`` (a callable, an entry point's name or None) stands for."""
    if value is None or callable(value):
        return value
    from importlib.metadata import entry_points

    found = [ep for ep in entry_points(group=GROUP) if ep.name == value]
    if not found:
        known = ", ".join(entry_point_names()) or "none is installed"
        raise KaleError(f"Kale.on_run_end = {value!r}: no entry point of that name in group '{GROUP}' "
                        f"({known}); set a callable taking the Run, or install the package that provides it.")
    try:
        hook = found[0].load()
    except Exception as exc:  # the providing package is broken: say which, run nothing
        raise KaleError(f"Kale.on_run_end = {value!r}: entry point {found[0].value} cannot be loaded "
                        f"({type(exc).__name__}: {exc}); fix or reinstall the package that provides it.") from None
    if not callable(hook):
        raise KaleError(f"Kale.on_run_end = {value!r}: entry point {found[0].value} is not callable; "
                        "it should name a function taking the Run.")
    return hook


def describe(hook: Hook) -> str:
    return getattr(hook, "__qualname__", None) or type(hook).__name__


def call_when_finished(run: "Run", hook: Hook | None, stream=None) -> None:
    """Call ``hook(run)`` once the run has finished: now if it has, else when its state says so."""
    if hook is None:
        return
    once = threading.Lock()

    def fire() -> None:
        if once.acquire(blocking=False):
            call(hook, run, stream)

    def on_change(state, event: str) -> None:
        if event == "finished":
            fire()

    run.state.subscribe(on_change)  # subscribed last: after the panel and the run store
    if run.state.finished:
        fire()


def call(hook: Hook, run: "Run", stream=None) -> None:
    """Run the hook; whatever it raises is one line on ``stream`` (stderr), never the run's business."""
    try:
        hook(run)
    except Exception as exc:  # the user's code: report it, keep the run as it ended
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"kale: Kale.on_run_end hook {describe(hook)} raised {type(exc).__name__}"
              f"{': ' + first if first else ''} (run {run.id} stays {run.status})",
              file=stream or sys.stderr, flush=True)
