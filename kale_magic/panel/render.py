"""Text and HTML renderings of a run, drawn from one :meth:`~kale_magic.run.state.RunState.snapshot`.

Every view (widget rows, the saved HTML fallback, terminal lines, ``Run``'s
repr) draws from these functions, so what the user sees is the same wherever
it is shown.  Every string that came from the user (step names, messages,
tracebacks, parameter values, paths) goes through :func:`html.escape`.
"""

from __future__ import annotations

import html
import os
from pathlib import Path, PurePath
from urllib.parse import quote, urlsplit

from ..run.state import RunSnapshot, RunState, StepState, TaskState
from ..server.address import FileServer
from . import timeline
from .graph import LiveGraph
from .style import COLORS, FAILED_FILL, ICONS, esc, items_summary, new_tab, plain, seconds

_ROW = ("display:flex;gap:0.8em;align-items:baseline;padding:2px 6px;margin:0;"
        "font-family:var(--jp-code-font-family,monospace);font-size:12px;")
_FAILED_ROW = f"background:{FAILED_FILL};border-left:3px solid #c62828;"


class Links:
    """Turns the paths and URLs in a state into hrefs and display text.

    Under a Jupyter server with kale-magic's extension (``server``), run files link
    to the extension, which serves the hidden ``.kale/`` folder that Jupyter's own
    file handlers refuse; they open in a new tab.  Elsewhere (VS Code, nbconvert
    HTML, a saved notebook opened later) workspace files get hrefs relative to the
    notebook's directory, which VS Code resolves and opens itself.  URLs with a
    scheme (the KFP UI) open in a new browser tab.
    """

    def __init__(self, notebook_dir: str | os.PathLike | None = None, server: FileServer | None = None):
        self.notebook_dir = Path(notebook_dir or os.getcwd()).resolve()
        self.server = server

    @staticmethod
    def is_url(target: str) -> bool:
        return urlsplit(str(target)).scheme in ("http", "https")

    def relative(self, target: str | os.PathLike) -> str:
        """The path as seen from the notebook's directory, with forward slashes."""
        path = Path(target)
        if path.is_absolute():
            path = Path(os.path.relpath(path.resolve(), self.notebook_dir))
        return PurePath(path).as_posix()

    def _served(self, target: str | os.PathLike) -> str | None:
        return self.server.href(target) if self.server and not self.is_url(str(target)) else None

    def href(self, target: str | os.PathLike) -> str:
        if self.is_url(str(target)):
            return str(target)
        return self._served(target) or quote(self.relative(target), safe="/")

    def anchor(self, label: str, target: str | os.PathLike) -> str:
        href = self.href(target)
        return (f'<a class="kale-link" href="{html.escape(href, quote=True)}"'
                f' title="{esc(target)}"{new_tab(href)}>{esc(label)}</a>')

    def text(self, label: str, target: str | os.PathLike) -> str:
        shown = str(target) if self.is_url(str(target)) else self.relative(target)
        return f"{plain(label)}: {plain(shown)}"


def step_links(step: StepState) -> dict[str, str]:
    links = {}
    if step.notebook:
        links["notebook"] = step.notebook
    if step.log:
        links["log"] = step.log
    links.update(step.links)
    return links


# -- text ------------------------------------------------------------------
def task_line(task: TaskState, links: Links) -> str:
    """One line per change: a line is printed once, so a running task shows no (stale) elapsed time."""
    elapsed = seconds(task.elapsed) if task.ended else ""
    parts = [f"{ICONS[task.status]} {task.name:<9} {task.status:<8} {elapsed:>9}"]
    if task.message:
        parts.append(plain(task.message))
    parts += [f"({links.text(k, v)})" for k, v in task.links.items()]
    return "  ".join(parts).rstrip()


def step_line(step: StepState, links: Links, *, terse: bool = False) -> str:
    """``✗ train failed: ValueError: ... (1.20 s)``; a message repeating the status is not doubled.

    ``terse`` (terminal progress, a line per change): the live log while running, the
    notebook and log of a failed step, no links for a step that went well.
    """
    name = plain(step.name) + (f" {items_summary(step)}" if step.items is not None else "")
    line = f"    {ICONS[step.status]} {name} {step.status}"
    message = plain(step.message).removeprefix(f"{step.status}: ")
    if message:
        line += f": {message}"
    if step.ended is not None:
        line += f" ({seconds(step.duration)})"
    parts = [line]
    if step.cached_from:
        parts.append(f"(cached from {plain(step.cached_from)})")
    shown = step_links(step)
    if terse:
        keep = {"running": ("log",), "failed": ("notebook", "log")}.get(step.status, ())
        shown = {k: v for k, v in shown.items() if k in keep}
    parts += [f"({links.text(k, v)})" for k, v in shown.items()]
    return "  ".join(parts)


def parameters_text(state: RunSnapshot) -> str:
    return ", ".join(f"{plain(k)}={plain(repr(v))}" for k, v in state.parameters.items())


def header_line(state: RunSnapshot) -> str:
    params = f" · {parameters_text(state)}" if state.parameters else ""
    return (f"Kale run {plain(state.run_id)} · pipeline {plain(state.pipeline)} · experiment "
            f"{plain(state.experiment)} · {state.engine} · {state.status}{params}")


def _ended(state: RunSnapshot) -> bool:
    """True from inside the ``finished`` notification on (``state.finished`` is set after it)."""
    return state.ended is not None


def footer_line(state: RunSnapshot) -> str:
    """How the run ended; a failure's sentence is on the row that failed, not repeated here."""
    took = seconds((state.ended or 0) - state.started) if state.ended else ""
    line = f"Run {plain(state.run_id)} {state.status}" + (f" in {took}" if took else "")
    if state.metrics:
        line += " · " + ", ".join(f"{plain(k)}={plain(v)}" for k, v in state.metrics.items())
    return line


def render_text(state: RunState | RunSnapshot, links: Links | None = None) -> str:
    links, run = links or Links(), state.snapshot()
    lines = [header_line(run)]
    for task in run.tasks.values():
        lines.append(task_line(task, links))
        if task.name == "Run":
            for step in run.steps.values():
                lines.append(step_line(step, links))
                lines += ["  " + step_line(item, links) for item in step.items or () if item.status != "succeeded"]
    if _ended(run):
        lines.append(footer_line(run))
    return "\n".join(lines)


# -- HTML ------------------------------------------------------------------
def _cells(kind: str, name: str, status: str, elapsed: float | None, message: str,
           links: dict[str, str], linker: Links) -> str:
    color = COLORS[status]
    anchors = " ".join(linker.anchor(k, v) for k, v in links.items())
    return (f'<span class="kale-icon" style="color:{color};width:1.2em">{ICONS[status]}</span>'
            f'<span class="kale-name" style="min-width:{"9em" if kind == "task" else "10em"};'
            f'font-weight:{"bold" if kind == "task" else "normal"}">{esc(name)}</span>'
            f'<span class="kale-status" style="color:{color};min-width:6em">{status}</span>'
            f'<span class="kale-time" style="min-width:5.5em;text-align:right">{seconds(elapsed)}</span>'
            f'<span class="kale-message" style="flex:1">{esc(message)}</span>'
            f'<span class="kale-links">{anchors}</span>')


def task_html(task: TaskState, links: Links) -> str:
    style = _ROW + (_FAILED_ROW if task.status == "failed" else "")
    return (f'<div class="kale-row kale-task" data-name="{esc(task.name)}" data-status="{task.status}"'
            f' style="{style}">'
            + _cells("task", task.name, task.status, task.elapsed, task.message, task.links, links)
            + "</div>")


def traceback_under_row(step: StepState) -> str:
    """A failed step's traceback as it is shown under its row, which already says the error: the
    traceback's closing error line is left out, so the sentence appears once."""
    if step.status != "failed" or not step.traceback:
        return ""
    lines = plain(step.traceback).rstrip().splitlines()
    if lines and step.message and lines[-1].strip().endswith(step.message):
        lines.pop()
    return "\n".join(lines).rstrip()


def step_html(step: StepState, links: Links) -> str:
    failed = step.status == "failed"
    style = _ROW + "padding-left:2.6em;" + (_FAILED_ROW if failed else "")
    message = step.message or (f"cached from {step.cached_from}" if step.cached_from else "")
    name = step.name + (f" {items_summary(step)}" if step.items is not None else "")
    row = (f'<div class="kale-row kale-step" data-name="{esc(step.name)}" data-status="{step.status}"'
           f' style="{style}">'
           + _cells("step", name, step.status, step.duration, message, step_links(step), links)
           + "</div>")
    if step.items:  # expandable: one row per item, open while one failed
        opened = " open" if step.status == "failed" else ""
        row += (f'<details class="kale-items" data-step="{esc(step.name)}" style="margin:0 6px 2px 3.6em"{opened}>'
                f'<summary style="cursor:pointer;font-size:11px">{len(step.items)} items</summary>'
                + "".join(step_html(item, links) for item in step.items) + "</details>")
    traceback = traceback_under_row(step)
    if traceback:
        row += ('<details class="kale-traceback" style="margin:0 6px 4px 3.6em">'
                '<summary style="cursor:pointer;color:#c62828">traceback</summary>'
                f'<pre style="white-space:pre-wrap;font-size:11px">{esc(traceback)}</pre></details>')
    return row


def header_html(state: RunSnapshot, links: Links) -> str:
    color = COLORS.get(state.status, COLORS["running"])
    return ('<div class="kale-header" style="padding:4px 6px;border-bottom:1px solid #ddd">'
            f'<b>Kale</b> · pipeline <b>{esc(state.pipeline)}</b> · experiment {esc(state.experiment)}'
            f' · run <code>{esc(state.run_id)}</code> · {esc(state.engine)}'
            f' · <span class="kale-run-status" style="color:{color};font-weight:bold">{state.status}</span>'
            + "".join(" · " + links.anchor(k, v) for k, v in state.links.items())
            + (f'<div class="kale-parameters" style="font-size:11px;color:#555">parameters: '
               f"{esc(parameters_text(state))}</div>" if state.parameters else "")
            + "</div>")


def footer_html(state: RunSnapshot) -> str:
    if not _ended(state):
        return ""
    style = "padding:4px 6px;border-top:1px solid #ddd;"
    if state.status == "failed":
        style += "color:#c62828;font-weight:bold;"
    return f'<div class="kale-footer" style="{style}">{esc(footer_line(state))}</div>'


def graph_fragment(run: RunSnapshot, links: Links, graph: LiveGraph) -> str:
    """The plan's graph with each step's status; a failed node links to its executed notebook (or log)."""
    if run.plan is None:
        return ""

    def error_link(name: str) -> str | None:
        found = step_links(run.steps[name])
        target = found.get("notebook") or found.get("log")
        return links.href(target) if target else None

    return graph.html(run.plan, run.steps, error_link)


def timeline_fragment(run: RunSnapshot) -> str:
    """When the run has ended: its steps on a time axis (nothing if no step started)."""
    if not _ended(run) or all(s.started is None for s in run.steps.values()):
        return ""
    parents = {name: step.parents for name, step in run.plan.steps.items()} if run.plan else {}
    return ('<div class="kale-run-timeline" style="border-top:1px solid #ddd">'
            '<div style="padding:4px 6px 0;font-size:11px;color:#555">timeline</div>'
            + timeline.timeline_html(run.steps, parents, now=run.ended) + "</div>")


def row_fragments(state: RunState | RunSnapshot, links: Links | None = None,
                  graph: LiveGraph | None = None) -> list[tuple[str, str]]:
    """(key, html) for each visible part, in order; the widget view updates them by key.

    The graph sits above the step rows (which hold the links and messages), the
    timeline below the footer once the run has ended.
    """
    links, run = links or Links(), state.snapshot()
    rows = [("header", header_html(run, links))]
    for task in run.tasks.values():
        rows.append((f"task:{task.name}", task_html(task, links)))
        if task.name == "Run":
            rows.append(("graph", graph_fragment(run, links, graph or LiveGraph())))
            rows += [(f"step:{s.name}", step_html(s, links)) for s in run.steps.values()]
    rows.append(("footer", footer_html(run)))
    rows.append(("timeline", timeline_fragment(run)))
    return rows


def render_html(state: RunState | RunSnapshot, links: Links | None = None, graph: LiveGraph | None = None) -> str:
    run = state.snapshot()
    body = "".join(fragment for _, fragment in row_fragments(run, links, graph))
    return (f'<div class="kale-panel" data-status="{run.status}" '
            f'style="border:1px solid #ddd;border-radius:4px;max-width:100%">{body}</div>')


class StateReport:
    """A displayable snapshot of a state: ``repr`` is text, ``_repr_html_`` the panel."""

    def __init__(self, state: RunState, links: Links | None = None):
        self.state = state
        self.links = links or Links()
        self.graph = LiveGraph()

    def __repr__(self) -> str:
        return render_text(self.state, self.links)

    def _repr_html_(self) -> str:
        return render_html(self.state, self.links, self.graph)

    def bundle(self) -> dict[str, str]:
        return {"text/plain": repr(self), "text/html": self._repr_html_()}
