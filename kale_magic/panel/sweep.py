"""One panel for a whole sweep: the shared steps once, then a row per point.

A listener on every point's state (and on the sweep itself) redraws it: an HTML display
updated in place in a notebook, lines in a terminal (a line when a shared step or a point
ends, and the table once the sweep ends).  Nine per-run panels would repeat the shared steps
nine times and hide the comparison the sweep is for.
"""

from __future__ import annotations

import sys

from .style import COLORS, ICONS, esc, plain, seconds
from .views import Throttle

_END = ("succeeded", "failed", "cached", "skipped")


def sweep_text(sweep) -> str:
    """The sweep as text: its header, the shared steps once, a line per point."""
    lines = [f"sweep {sweep.id} {sweep.status}: {len(sweep.points)} points over {', '.join(sweep.grid.names)}"]
    if sweep.shared:
        lines.append("  shared steps (once, in point 1): " + ", ".join(
            f"{ICONS.get(s, '?')} {plain(n)} {s}" for n, s in _shared(sweep)))
    for row in _rows(sweep):
        lines.append(f"  {row['number']:>3}. {plain(row['values'])}  {ICONS.get(row['status'], '·')} "
                     f"{row['status']}  {plain(row['run'])}  {plain(row['steps'])}  {plain(row['metrics'])}".rstrip())
    return "\n".join(lines)


def sweep_html(sweep) -> str:
    shared = "".join(f'<span style="color:{COLORS.get(s, "#757575")};margin-right:1em">{ICONS.get(s, "?")} '
                     f"{esc(n)}</span>" for n, s in _shared(sweep))
    head = "".join(f"<th>{esc(h)}</th>" for h in ("#", *sweep.grid.names, "status", "run", "steps", "metrics"))
    body = "".join(
        "<tr>" + f"<td>{row['number']}</td>" + "".join(f"<td>{esc(repr(v))}</td>" for v in row["point"].values())
        + f'<td style="color:{COLORS.get(row["status"], "#757575")}">{ICONS.get(row["status"], "·")} '
        f"{esc(row['status'])}</td><td><code>{esc(row['run'])}</code></td><td>{esc(row['steps'])}</td>"
        f"<td>{esc(row['metrics'])}</td></tr>" for row in _rows(sweep))
    shared_line = (f"<div>shared steps, run once (point 1): {shared}</div>" if sweep.shared else "")
    return (f'<div class="kale-sweep"><div><b>sweep</b> <code>{esc(sweep.id)}</code> {esc(sweep.status)}: '
            f"{len(sweep.points)} points over {esc(', '.join(sweep.grid.names))}</div>{shared_line}"
            f'<table class="kale-sweep-points"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>')


def _shared(sweep) -> list[tuple[str, str]]:
    first = sweep.points[0].run
    steps = first.state.steps if first is not None else {}
    return [(name, steps[name].status if name in steps else "pending") for name in sweep.shared]


def _rows(sweep) -> list[dict]:
    rows = []
    for point in sweep.points:
        run = point.run
        steps = {} if run is None else run.state.steps
        own = [(n, s) for n, s in steps.items() if n not in sweep.shared]
        done = sum(1 for _, s in own if s.status in _END)
        running = [n for n, s in own if s.status == "running"]
        text = f"{done}/{len(own)} steps" + (f", running {', '.join(running)}" if running else "") if own else ""
        if run is not None and run.state.ended is not None:
            text += f" in {seconds(run.state.ended - run.state.started)}"
        rows.append({"number": point.number, "point": point.values, "status": point.status,
                     "values": " ".join(f"{k}={v!r}" for k, v in point.values.items()),
                     "run": run.id.rsplit("-", 1)[-1] if run else point.note, "steps": text,
                     "metrics": " ".join(f"{k}={v!r}" for k, v in (run.metrics if run else {}).items())})
    return rows


class SweepPanel:
    """The sweep's one view; a listener of every point's run state and of the sweep."""

    view = "the sweep panel"  # how a run names it if it fails

    def __init__(self, sweep, mode: str, stream=None):
        self.sweep = sweep
        self.mode = mode
        self.stream = stream or sys.stdout
        self._handle = None
        self._told: set[tuple] = set()  # (run id, step or '', status) already printed (text)
        self._throttle = Throttle(self._draw, 0.25)
        sweep.listeners.append(self._on_sweep)

    def start(self) -> "SweepPanel":
        if self.mode == "text":
            print(sweep_text(self.sweep), file=self.stream, flush=True)
        else:
            from IPython.display import HTML, display

            self._handle = display(HTML(sweep_html(self.sweep)), display_id=True)
        return self

    def __call__(self, state, event: str) -> None:
        """A point's run changed."""
        if self.mode == "text":
            self._tell(state, event)
        else:
            self._throttle.poke()

    def _on_sweep(self, sweep) -> None:
        if sweep.finished:
            self._throttle.close()
            with self._throttle.drawing:
                if self.mode == "text":
                    print(sweep_text(sweep), file=self.stream, flush=True)
                else:
                    self._draw()
        else:
            self._throttle.poke()

    def _draw(self) -> None:
        if self._handle is not None:
            from IPython.display import HTML

            self._handle.update(HTML(sweep_html(self.sweep)))

    def _tell(self, state, event: str) -> None:
        """Text: a line when a shared step of point 1 ends and when a point ends."""
        point = next((p for p in self.sweep.points if p.run is not None and p.run.state is state), None)
        if point is None:
            return
        values = " ".join(f"{k}={v!r}" for k, v in point.values.items())
        kind, _, step = event.partition(":")
        if kind == "step" and point.number == 1 and step in self.sweep.shared:
            status = state.steps[step].status
            if status in _END and self._once(state.run_id, step, status):
                print(f"sweep {self.sweep.id}: shared step {plain(step)} {status} (once for all points)",
                      file=self.stream, flush=True)
        elif event == "finished" and self._once(state.run_id, "", state.status):
            metrics = "".join(f" {k}={v!r}" for k, v in state.metrics.items())
            print(f"sweep {self.sweep.id}: point {point.number}/{len(self.sweep.points)} {plain(values)} "
                  f"{state.status}{plain(metrics)} (run {state.run_id})", file=self.stream, flush=True)

    def _once(self, *key) -> bool:
        if key in self._told:
            return False
        self._told.add(key)
        return True

    def __repr__(self) -> str:
        return sweep_text(self.sweep)
