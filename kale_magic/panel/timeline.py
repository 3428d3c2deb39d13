"""The run as a timeline: one bar per step from its start to its end.

Drawn under the panel when a run ends, from the steps' times in the run state,
so concurrency (bars side by side in time), the slow step (the longest bar, its
name in bold) and the critical path (outlined bars: the step that ended last,
then, going back, the parent that held it up longest) are visible at a glance.
A cached step took no time: it is a hollow mark where it was reused; a step
that never ran (skipped, or left pending by a failure) has no bar, only its
status.  One row per step in plan order; beyond :data:`~.svg.MAX_HEIGHT` the
box scrolls like the graph's.
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
    total_h = TOP + ROW * len(steps) + BOTTOM
    parts = [svg_open(total_w, total_h, "kale-timeline", f"timeline of {len(steps)} steps")]
    parts.append('<g class="kale-axis" font-size="10" fill="#757575">')
    for tick in ticks:
        x = names_w + tick * scale
        parts.append(f'<line x1="{num(x)}" y1="{TOP - 4}" x2="{num(x)}" y2="{num(total_h - BOTTOM)}" '
                     f'stroke="#eeeeee"/><text x="{num(x)}" y="{TOP - 8}" text-anchor="middle">'
                     f"{_tick_label(tick, step)}</text>")
    parts.append("</g>")
    for row, (name, state) in enumerate(steps.items()):
        parts.append(_row(name, state, TOP + row * ROW, names_w, start, end, scale,
                          name in critical, name == slowest))
    legend = []
    if len(critical) > 1:
        took = seconds(max(steps[n].ended for n in critical) - min(steps[n].started for n in critical))
        legend.append(f"outlined: critical path, {len(critical)} steps, {took}")
    if slowest is not None:
        legend.append(f"slowest: {clip(slowest, NAME_CELLS)}, {seconds(durations[slowest])}")
    parts.append(f'<text class="kale-legend" x="{num(names_w)}" y="{num(total_h - 7)}" font-size="10" '
                 f'fill="#616161">{text(" · ".join(legend))}</text></svg>')
    return "".join(parts)


def _row(name: str, state: StepView, y: float, names_w: float, start: float, end: float, scale: float,
         critical: bool, slowest: bool) -> str:
    color = COLORS[state.status]
    mid = y + ROW / 2 + 4
    weight = ' font-weight="bold"' if slowest else ""
    mark = ' data-critical="true"' if critical else ""
    out = (f'<g class="kale-bar" data-step="{text(name)}" data-status="{state.status}"{mark}>'
           f'<text x="10" y="{num(mid)}" fill="{color}">{ICONS[state.status]}</text>'
           f'<text x="26" y="{num(mid)}"{weight} fill="#212121">{text(clip(name, NAME_CELLS))}</text>')
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
