"""The live views of a run: ipywidgets rows, an updated display, terminal lines.

Each view subscribes to a :class:`~kale_magic.run.state.RunState` and redraws from
it; none holds run logic.  Redraws are throttled so a run with many fast steps
is not slowed by its panel; the final state is always drawn.
"""

from __future__ import annotations

import sys
import threading
import time

from ..run.state import RunState, StepState
from .render import (Links, StateReport, footer_line, header_line, row_fragments, step_line, task_line,
                     traceback_under_row)

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
# Output widgets pad each output like a notebook output; rows of a panel sit tight.
WIDGET_CSS = ("<style>.kale-panel-widget .widget-output, .kale-panel-widget .jp-OutputArea-child,"
              " .kale-panel-widget .jp-OutputArea-output, .kale-panel-widget .kale-header"
              " {margin: 0; padding-top: 0; padding-bottom: 0; min-height: 0}</style>")


class Throttle:
    """Calls ``draw`` at most once per ``interval``; a change inside the window is drawn at its end."""

    def __init__(self, draw, interval: float = 0.1):
        self.draw = draw
        self.interval = interval
        self._last = 0.0
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()  # guards _last and _timer
        self.drawing = threading.Lock()  # held while drawing: one draw at a time
        self._closed = False

    def poke(self) -> None:
        with self._lock:
            if self._closed or self._timer is not None:
                return
            wait = self._last + self.interval - time.monotonic()
            if wait > 0:
                self._timer = threading.Timer(wait, self._fire)
                self._timer.daemon = True
                self._timer.start()
                return
            self._last = time.monotonic()
        self._run()

    def _fire(self) -> None:
        with self._lock:
            self._timer = None
            if self._closed:
                return
            self._last = time.monotonic()
        self._run()

    def _run(self) -> None:
        with self.drawing:
            self.draw()

    def close(self) -> None:
        """Stop pending draws; the caller draws the final state itself."""
        with self._lock:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None


class _View:
    """Subscribes to a state and routes changes to a throttled ``draw`` and a final ``finish``.

    Live views redraw every ``tick`` seconds too, so running rows show a current elapsed time.
    """

    tick: float | None = 1.0
    view = "the panel"  # how the run names it if it fails

    def __init__(self, state: RunState, links: Links | None = None, interval: float = 0.1):
        self.state = state
        self.links = links or Links()
        self.report = StateReport(state, self.links)
        self._throttle = Throttle(self.draw, interval)
        self._finished = False

    def start(self) -> "_View":
        self.state.subscribe(self._on_change)
        if self.state.ended is not None:
            self._finish()
        elif self.tick:
            threading.Thread(target=self._ticker, name="kale-panel-tick", daemon=True).start()
        return self

    def _ticker(self) -> None:
        while not self.state.wait(self.tick):
            self._throttle.poke()

    def _on_change(self, state: RunState, event: str) -> None:
        if event == "finished":
            self._finish()
        else:
            self._throttle.poke()

    def _finish(self) -> None:
        """Draw the final state once, even if the run ended while the view was starting."""
        self._throttle.close()
        with self._throttle.drawing:
            if not self._finished:
                self._finished = True
                self.finish()

    def draw(self) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        return repr(self.report)

    def _repr_html_(self) -> str:
        return self.report._repr_html_()


def _with_traceback(step, line: str) -> str:
    """A terminal has no expandable rows: a failed step's traceback follows its line."""
    traceback = traceback_under_row(step)
    return line + "\n" + traceback if traceback else line


class WidgetView(_View):
    """One ipywidgets ``Output`` per row, updated in place while the run goes on.

    Rows are ``Output`` widgets holding HTML so the notebook's renderer handles
    their links exactly like saved output (relative paths open in the workspace).
    At the end the widgets are replaced by the static panel (text/html +
    text/plain) so the saved notebook shows the final state without widget state.
    """

    def start(self) -> "WidgetView":
        import ipywidgets
        from IPython.display import display

        self._widgets = ipywidgets
        self._rows: dict[str, object] = {}
        self._shown: dict[str, str] = {}
        self.box = ipywidgets.VBox(layout=ipywidgets.Layout(border="1px solid #ddd"))
        self.box.add_class("kale-panel-widget")
        self.draw()
        bundle = {WIDGET_MIME: {"version_major": 2, "version_minor": 0, "model_id": self.box.model_id},
                  **self.report.bundle()}
        self.handle = display(bundle, raw=True, display_id=True)
        return super().start()

    def draw(self) -> None:
        fragments = row_fragments(self.state, self.links, self.report.graph)
        fragments[0] = (fragments[0][0], WIDGET_CSS + fragments[0][1])
        for key, fragment in fragments:
            if key not in self._rows:
                self._rows[key] = self._widgets.Output()
            if self._shown.get(key) != fragment:
                self._shown[key] = fragment
                data = {"text/html": fragment, "text/plain": key}
                self._rows[key].outputs = ({"output_type": "display_data", "data": data, "metadata": {}},)
        children = tuple(self._rows[key] for key, _ in fragments)
        if children != self.box.children:
            self.box.children = children

    def finish(self) -> None:
        self.handle.update(self.report.bundle(), raw=True)
        for row in self._rows.values():
            row.close()
        self.box.close()


class DisplayView(_View):
    """A rich display updated in place (notebook kernels without ipywidgets)."""

    def start(self) -> "DisplayView":
        from IPython.display import display

        self.handle = display(self.report.bundle(), raw=True, display_id=True)
        return super().start()

    def draw(self) -> None:
        self.handle.update(self.report.bundle(), raw=True)

    finish = draw


class TextView(_View):
    """Prints a line whenever a task or step changes (terminal IPython, scripts)."""

    tick = None

    def __init__(self, state: RunState, links: Links | None = None, stream=None):
        super().__init__(state, links, interval=0.0)
        self.stream = stream or sys.stdout
        self._printed: dict[str, tuple[str, str]] = {}  # row -> (status, message) last printed

    def start(self) -> "TextView":
        self._print(header_line(self.state.snapshot()))
        return super().start()

    def _print(self, line: str) -> None:
        print(line, file=self.stream, flush=True)

    def _on_change(self, state: RunState, event: str) -> None:
        if event == "finished":
            self._finish()
        else:
            kind, _, name = event.partition(":")
            with self._throttle.drawing:
                self.draw(name if kind == "step" else None)

    def draw(self, step: str | None = None) -> None:
        """Print the rows that changed; after a step's event, only that step's row can have (looking at
        every row on every event made a run's text output quadratic in its number of steps)."""
        if step is not None:
            rows = [self.state.steps[step]] if step in self.state.steps else []
        else:
            run = self.state.snapshot()
            rows = [t for t in run.tasks.values() if t.status != "running" or t.name == "Run"]  # others: an instant
            rows += run.steps.values()
        for row in rows:
            key = f"{'step' if isinstance(row, StepState) else 'task'}:{row.name}"
            before = self._printed.get(key, ("pending", ""))
            if before == (row.status, row.message):
                continue
            self._printed[key] = (row.status, row.message)
            if not (row.status == before[0] and not row.message):  # a note that ended says nothing new
                self._print(_with_traceback(row, step_line(row, self.links, terse=True))
                            if isinstance(row, StepState) else task_line(row, self.links))

    def finish(self) -> None:
        self.draw()
        self._print(footer_line(self.state.snapshot()))
