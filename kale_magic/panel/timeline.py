"""The run as a timeline: one bar per step from its start to its end.

Drawn under the panel when a run ends, from the steps' times in the run state,
so concurrency (bars side by side in time), the slow step (the longest bar, its
name in bold) and the critical path (outlined bars: the step that ended last,
then, going back, the parent that held it up longest) are visible at a glance.
A cached step took no time: it is a hollow mark where it was reused; a step
that never ran (skipped, or left pending by a failure) has no bar, only its
status.  One row per step in plan order; beyond :data:`~.svg.MAX_HEIGHT` the
box scrolls like the graph's.  A ``--foreach`` step is a bracket over the time its
items took, with one row per item under it (the first :data:`ITEM_ROWS`, then how
many more), so items that ran together are parallel bars.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

from .style import COLORS, ICONS, seconds
from .svg import StepView, box, clip, num, svg_open, text, width

NAME_CELLS = 24
PLOT_WIDTH = 560
ROW, BAR = 20, 12
TOP, BOTTOM = 24, 22  # axis above the rows, legend below
CRITICAL_STROKE = "#212121"
ITEM_ROWS = 20  # item rows under a foreach step; beyond, one row says how many more


def critical_path(steps: Mapping[str, StepView], parents: Mapping[str, Sequence[str]]) -> list[str]:
    """From a first step to the one that ended last, each step preceded by its parent that ended last."""
    ended = {name: s.ended for name, s in steps.items() if s.started is not None and s.ended is not None}
    if not ended:
        return []
    current = max(ended, key=ended.__getitem__)
    path = [current]
    while gating := [p for p in parents.get(current, ()) if p in ended]:
        current = max(gating, key=ended.__getitem__)
        path.append(current)
    return path[::-1]


def _ticks(span: float) -> tuple[float, list[float]]:
    """A 1-2-5 step giving at most about seven ticks over ``span`` seconds."""
    raw = span / 6
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    return step, [i * step for i in range(int(span / step + 1e-9) + 1)]


def _tick_label(value: float, step: float) -> str:
    if step >= 60:
        return f"{value / 60:g} min"
    return f"{value:.{max(0, -math.floor(math.log10(step)))}f} s"


def timeline_svg(steps: Mapping[str, StepView], parents: Mapping[str, Sequence[str]] | None = None, *,
                 now: float | None = None) -> str:
    """One ``<svg>`` row per step; ``parents`` (step -> its parents) marks the critical path.

    The axis runs from the first start to the last end; ``now`` ends the bars of
    steps still running (default: the latest time known).
    """
    times = [t for s in steps.values() for t in (s.started, s.ended) if t is not None]
    if now is not None and any(s.started is not None and s.ended is None for s in steps.values()):
        times.append(now)
    start, end = min(times, default=0.0), max(times, default=0.0)
    span = max(end - start, 1e-3)
    step, ticks = _ticks(span)
    critical = set(critical_path(steps, parents or {}))
    durations = {n: (s.ended or end) - s.started for n, s in steps.items()
                 if s.started is not None and s.status != "cached"}
    slowest = max(durations, key=durations.__getitem__) if durations else None

    names_w = 26 + max([width(clip(n, NAME_CELLS), 12) for n in steps] + [60])
    scale = PLOT_WIDTH / span
    total_w = names_w + PLOT_WIDTH + 90
    rows = sum(1 + _item_rows(s) for s in steps.values())
    total_h = TOP + ROW * rows + BOTTOM
    parts = [svg_open(total_w, total_h, "kale-timeline", f"timeline of {len(steps)} steps")]
    parts.append('<g class="kale-axis" font-size="10" fill="#757575">')
    for tick in ticks:
        x = names_w + tick * scale
        parts.append(f'<line x1="{num(x)}" y1="{TOP - 4}" x2="{num(x)}" y2="{num(total_h - BOTTOM)}" '
                     f'stroke="#eeeeee"/><text x="{num(x)}" y="{TOP - 8}" text-anchor="middle">'
                     f"{_tick_label(tick, step)}</text>")
    parts.append("</g>")
    row = 0
    for name, state in steps.items():
        items = getattr(state, "items", None)
        if items is None:
            parts.append(_row(name, state, TOP + row * ROW, names_w, start, end, scale,
                              name in critical, name == slowest))
            row += 1
            continue
        parts.append(_group(name, state, TOP + row * ROW, names_w, start, scale, name in critical, name == slowest))
        row += 1
        for index, item in enumerate(items[:ITEM_ROWS]):
            parts.append(_row(f"{name}[{index}]", item, TOP + row * ROW, names_w, start, end, scale, False, False,
                              label=f"[{index}]", css="kale-item", parent=name))
            row += 1
        if len(items) > ITEM_ROWS:
            parts.append(f'<text class="kale-more" x="38" y="{num(TOP + row * ROW + ROW / 2 + 4)}" font-size="10" '
                         f'fill="#757575">{len(items) - ITEM_ROWS:,} more items of {text(clip(name, NAME_CELLS))}'
                         "</text>")
            row += 1
    legend = []
    if len(critical) > 1:
        took = seconds(max(steps[n].ended for n in critical) - min(steps[n].started for n in critical))
        legend.append(f"outlined: critical path, {len(critical)} steps, {took}")
    if slowest is not None:
        legend.append(f"slowest: {clip(slowest, NAME_CELLS)}, {seconds(durations[slowest])}")
    parts.append(f'<text class="kale-legend" x="{num(names_w)}" y="{num(total_h - 7)}" font-size="10" '
                 f'fill="#616161">{text(" · ".join(legend))}</text></svg>')
    return "".join(parts)


def _item_rows(state: StepView) -> int:
    items = getattr(state, "items", None)
    return 0 if items is None else min(len(items), ITEM_ROWS) + (len(items) > ITEM_ROWS)


def _group(name: str, state: StepView, y: float, names_w: float, start: float, scale: float,
           critical: bool, slowest: bool) -> str:
    """A foreach step's row: its name with the item count, a bracket from its first item's start to its
    last item's end (its items' bars are the rows under it)."""
    color = COLORS[state.status]
    mid = y + ROW / 2 + 4
    weight = ' font-weight="bold"' if slowest else ""
    mark = ' data-critical="true"' if critical else ""
    count = len(state.items)
    out = (f'<g class="kale-bar kale-group" data-step="{text(name)}" data-status="{state.status}" '
           f'data-items="{count}"{mark}><text x="10" y="{num(mid)}" fill="{color}">{ICONS[state.status]}</text>'
           f'<text x="26" y="{num(mid)}"{weight} fill="#212121">{text(clip(name, NAME_CELLS - 6))} ×{count}</text>')
    if state.started is None or state.ended is None:
        note = "no items" if not count else "not run" if state.status == "pending" else state.status
        return out + (f'<text x="{num(names_w + 4)}" y="{num(mid)}" font-size="10" fill="#9e9e9e">{note}</text></g>')
    x0, x1 = names_w + (state.started - start) * scale, names_w + (state.ended - start) * scale
    line = y + ROW / 2
    stroke = CRITICAL_STROKE if critical else color
    took = seconds(state.ended - state.started)
    x1 = max(x1, x0 + 2)
    return out + (f"<title>{text(f'{name}: {count} items, {state.status}, took {took}')}</title>"
                  f'<path class="kale-bracket" d="M{num(x0)},{num(line + 4)} V{num(line)} H{num(x1)} '
                  f'V{num(line + 4)}" fill="none" stroke="{stroke}" stroke-width="1.5"/>'
                  f'<text x="{num(x1 + 5)}" y="{num(mid)}" font-size="10" fill="#616161">{took}</text></g>')


def _row(name: str, state: StepView, y: float, names_w: float, start: float, end: float, scale: float,
         critical: bool, slowest: bool, label: str | None = None, css: str = "kale-bar", parent: str = "") -> str:
    """A step's row, or (``css`` kale-item) an item's under its step, labelled ``[i]`` and indented."""
    color = COLORS[state.status]
    mid = y + ROW / 2 + 4
    weight = ' font-weight="bold"' if slowest else ""
    mark = ' data-critical="true"' if critical else ""
    mark += f' data-parent="{text(parent)}"' if parent else ""
    out = (f'<g class="{css}" data-step="{text(name)}" data-status="{state.status}"{mark}>'
           f'<text x="{10 + 12 * bool(parent)}" y="{num(mid)}" fill="{color}">{ICONS[state.status]}</text>'
           f'<text x="{26 + 12 * bool(parent)}" y="{num(mid)}"{weight} fill="#212121">'
           f'{text(clip(label or name, NAME_CELLS))}</text>')
    if state.started is None:
        note = "not run" if state.status == "pending" else state.status
        return out + (f'<text x="{num(names_w + 4)}" y="{num(mid)}" font-size="10" fill="#9e9e9e">'
                      f"{note}</text></g>")
    x = names_w + (state.started - start) * scale
    top = y + (ROW - BAR) / 2
    if state.status == "cached":
        source = f" from {state.cached_from}" if state.cached_from else ""
        return out + (f"<title>{text(f'{name}: cached{source}')}</title>"
                      f'<rect x="{num(x - 2)}" y="{num(top)}" width="4" height="{BAR}" rx="1" fill="#ffffff" '
                      f'stroke="{color}" stroke-width="1.5"/><text x="{num(x + 8)}" y="{num(mid)}" '
                      f'font-size="10" fill="{color}">{text(f"cached{source}")}</text></g>')
    took = (state.ended or end) - state.started
    outline = f' stroke="{CRITICAL_STROKE}" stroke-width="1.5"' if critical else ""
    pulse = ('<animate attributeName="opacity" values="1;0.45;1" dur="1.2s" repeatCount="indefinite"/>'
             if state.status == "running" else "")
    offset = seconds(state.started - start)
    return out + (f"<title>{text(f'{name}: {state.status}, from +{offset}, took {seconds(took)}')}</title>"
                  f'<rect x="{num(x)}" y="{num(top)}" width="{num(max(took * scale, 2))}" height="{BAR}" rx="2" '
                  f'fill="{color}"{outline}>{pulse}</rect>'
                  f'<text x="{num(x + max(took * scale, 2) + 5)}" y="{num(mid)}" font-size="10" fill="#616161">'
                  f"{seconds(took)}</text></g>")


def timeline_html(steps: Mapping[str, StepView], parents: Mapping[str, Sequence[str]] | None = None, *,
                  now: float | None = None) -> str:
    """:func:`timeline_svg` in a box that scrolls like the graph's."""
    shown = f"The timeline of {len(steps)} steps shows once the notebook is trusted"
    return box(timeline_svg(steps, parents, now=now), "kale-timeline-box", shown)
