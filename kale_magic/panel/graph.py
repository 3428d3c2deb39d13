"""The pipeline as a picture: a :class:`~kale_magic.plan.Plan` drawn as SVG.

``%kale_show`` draws it from the plan alone; the panel of ``%kale_run`` draws it
again at each status change with the steps' states (same icons and colours as
the panel's rows; a running node's border marches, a failed one is red and
links to its error).  Geometry comes from :mod:`.layered`.

Readability from 1 to 50+ steps: every step stays a node (a collapsed group
would hide statuses).  The graph grows downward; when that would make it wider
than :data:`MAX_WIDTH`, it is drawn left to right instead, so a wide fan-out
stacks vertically.  :func:`graph_html` puts the picture in a box at most
:data:`~.svg.MAX_HEIGHT` px high that scrolls; names longer than :data:`NAME_CELLS`
are cut with an ellipsis and whole in the node's tooltip.
"""

from __future__ import annotations

from typing import Callable, Mapping
from urllib.parse import urlsplit

from ..plan import Plan, Transfer
from ..files import human_size
from . import layered
from .layered import Edge, Key, Layout
from .style import COLORS, FAILED_FILL, ICONS, items_summary, new_tab
from .svg import StepView, box, clip, num, svg_open, text, width

MAX_WIDTH = 960  # px: a top-down picture wider than this is drawn left to right
NAME_CELLS = 24  # step names are cut beyond this many monospace cells
LABEL_CELLS = 30  # value labels likewise
NAME_SIZE, DETAIL_SIZE, LABEL_SIZE, INFO_SIZE = 12, 10, 11, 9.5
PAD, ICON = 10, 16  # px: inside a node, before its text; the status icon's place before the name

# Node fill per status; the stroke, icon and text colours are the panel rows' COLORS.
FILLS = {"pending": "#fafafa", "running": "#e3f2fd", "succeeded": "#e8f5e9", "failed": FAILED_FILL,
         "cached": "#e0f7fa", "skipped": "#f5f5f5"}
PLAN_STROKE, EDGE_STROKE = "#607d8b", "#9e9e9e"
LONG_STROKE = "#7e9cc0"  # a long edge (values from an ancestor past its children): told apart from the others
CONDITION_STROKE = "#ef6c00"  # an edge into an --if step: it runs only when its condition holds


# -- what is written where ---------------------------------------------------
def _short_type(type_name: str) -> str:
    return type_name.rsplit(".", 1)[-1]


def _value_lines(plan: Plan, producer: str, names: tuple[str, ...]) -> tuple[str, str]:
    """A label's two lines: the names, and in small print the type and size."""
    values = _values(plan, producer, names)
    known = [t.size for t in values if t.size is not None]
    size = human_size(sum(known)) if known and len(known) == len(values) else ""
    kind = _short_type(values[0].type_name) if len(values) == 1 else f"{len(values)} values"
    return clip(", ".join(names), LABEL_CELLS), clip(" · ".join(filter(None, (kind, size))), LABEL_CELLS)


def _values(plan: Plan, producer: str, names: tuple[str, ...]) -> list[Transfer]:
    """The transfers behind an edge's names (edges are named after what their consumers and gates load)."""
    loaded = {t.name: t for s in plan.steps.values() for t in s.inputs + s.condition_inputs
              if t.producer == producer}
    return [loaded[n] for n in names]


def _detail(plan: Plan, name: str) -> str:
    """The node's second line: a foreach step's clause, then its --if condition (what decides whether it
    runs), else the parameters it reads."""
    step = plan.steps[name]
    loop = f"∀ {step.foreach.var} in {step.foreach.name}" if step.foreach else ""
    rest = (f"if {step.options.condition}" if step.options.condition
            else "⚙ " + ", ".join(step.parameters) if step.parameters else "")
    return clip("  ".join(filter(None, (loop, rest))), NAME_CELLS + 6)


def _title(name: str, state) -> str:
    """The node's name, with a foreach step's items once known: ``train ×5: 3 ✓ 1 ◔ 1 ✗``."""
    items = getattr(state, "items", None)
    return clip(name, NAME_CELLS) + (f" {items_summary(state)}" if items is not None else "")


def _sizer(plan: Plan):
    """Measures the items of :func:`layered.layout` from what will be written in them."""
    # a foreach node leaves room for its items (``×12: 5 ✓ 4 ◔ 2 ✗ 1 –``)
    names = max((width(clip(n, NAME_CELLS) + (" ×12: 5 ✓ 4 ◔ 2 ✗ 1 –" if s.foreach else ""), NAME_SIZE)
                 for n, s in plan.steps.items()), default=0.0)
    details = max((width(_detail(plan, n), DETAIL_SIZE) for n in plan.steps), default=0.0)
    # Room for the status icon even in the planned picture, so a run's picture has the plan's layout.
    node = (2 * PAD + max(ICON + names, details, 56), 29 if details == 0 else 44)

    def size(key: Key) -> tuple[float, float]:
        if key[0] == "step":
            return node
        if key[0] == "value":
            first, second = _value_lines(plan, key[1], key[2])
            return PAD + max(width(first, LABEL_SIZE), width(second, INFO_SIZE)), 28
        return 4, 4

    return size


def layout(plan: Plan) -> Layout:
    """The picture's geometry; it depends on the plan only, so nodes stay put while a run goes on."""
    return layered.layout(plan, _sizer(plan), MAX_WIDTH)


# -- drawing ----------------------------------------------------------------------
def _edge_path(geo: Layout, edge: Edge) -> tuple[str, str]:
    """The edge's curve through its items, and the arrowhead at the consumer."""

    def ends(key: Key) -> tuple[tuple[float, float], tuple[float, float]]:
        b = geo.boxes[key]
        if geo.vertical:
            return (b.x, b.y - b.h / 2), (b.x, b.y + b.h / 2)
        return (b.x - b.w / 2, b.y), (b.x + b.w / 2, b.y)

    arrow = 6.0
    points = [ends(key) for key in edge.chain]
    (tx, ty), _ = points[-1]
    tip = (tx, ty - arrow) if geo.vertical else (tx - arrow, ty)
    points[-1] = (tip, tip)
    d = f"M{num(points[0][1][0])},{num(points[0][1][1])}"
    for (_, (x1, y1)), ((x2, y2), out) in zip(points, points[1:]):
        if geo.vertical:
            m = (y1 + y2) / 2
            d += f" C{num(x1)},{num(m)} {num(x2)},{num(m)} {num(x2)},{num(y2)}"
        else:
            m = (x1 + x2) / 2
            d += f" C{num(m)},{num(y1)} {num(m)},{num(y2)} {num(x2)},{num(y2)}"
        if out != (x2, y2):
            d += f" L{num(out[0])},{num(out[1])}"
    if geo.vertical:
        head = f"M{num(tx)},{num(ty)} L{num(tx - 4)},{num(ty - arrow)} L{num(tx + 4)},{num(ty - arrow)} Z"
    else:
        head = f"M{num(tx)},{num(ty)} L{num(tx - arrow)},{num(ty - 4)} L{num(tx - arrow)},{num(ty + 4)} Z"
    return d, head


def _edge_svg(plan: Plan, geo: Layout, edge: Edge) -> str:
    d, head = _edge_path(geo, edge)
    dash = "" if edge.names else ' stroke-dasharray="4 3"'
    stroke, long = (LONG_STROKE, ' data-long="true"') if edge.long else (EDGE_STROKE, "")
    tip = (f"<title>{text(', '.join(edge.names))}: {text(edge.producer)} → {text(edge.consumer)}, "
           f"past the steps between them</title>") if edge.long else ""
    condition = plan.steps[edge.consumer].options.condition
    if condition and not edge.long:  # labelled: the consumer runs only if it holds
        stroke, dash = CONDITION_STROKE, ' stroke-dasharray="7 2 2 2"'
        long += f' data-condition="{text(condition)}"'
        tip = f"<title>{text(edge.consumer)} runs only if {text(condition)}</title>"
    return (f'<g class="kale-edge" data-from="{text(edge.producer)}" data-to="{text(edge.consumer)}" '
            f'data-values="{text(",".join(edge.names))}"{long}>{tip}'
            f'<path d="{d}" fill="none" stroke="{stroke}" stroke-width="1.3"{dash}/>'
            f'<path d="{head}" fill="{stroke}"/></g>')


def _value_svg(plan: Plan, geo: Layout, key: Key) -> str:
    _, producer, names = key
    b = geo.boxes[key]
    first, second = _value_lines(plan, producer, names)
    tip = "\n".join(f"{t.name}: {t.type_name}, {human_size(t.size)}, {t.backend} backend"
                    for t in _values(plan, producer, names))
    left = b.x - b.w / 2
    return (f'<g class="kale-value" data-from="{text(producer)}" data-values="{text(",".join(names))}">'
            f'<title>{text(tip)}</title>'
            f'<rect x="{num(left)}" y="{num(b.y - b.h / 2)}" width="{num(b.w)}" height="{num(b.h)}" rx="3" '
            f'fill="#ffffff" stroke="#e0e0e0"/>'
            f'<text class="kale-value-names" x="{num(b.x)}" y="{num(b.y - 1.5)}" text-anchor="middle" '
            f'font-size="{LABEL_SIZE}" fill="#37474f">{text(first)}</text>'
            f'<text class="kale-value-info" x="{num(b.x)}" y="{num(b.y + 10)}" text-anchor="middle" '
            f'font-size="{INFO_SIZE}" fill="#757575">{text(second)}</text></g>')


def _tooltip(plan: Plan, name: str, state: StepView | None) -> str:
    step = plan.steps[name]
    lines = [name] + ([f"runs only if {step.options.condition}"] if step.options.condition else [])
    if state is not None:
        message = (state.message or "").removeprefix(f"{state.status}: ")
        lines.append(state.status + (f": {message}" if message else "")
                     + (f" (cached from {state.cached_from})" if state.cached_from else ""))
    if step.parameters:
        lines.append("parameters: " + ", ".join(step.parameters))
    if step.inputs:
        lines.append("reads: " + ", ".join(f"{t.name} ({t.producer})" for t in step.inputs))
    if step.outputs:
        lines.append("writes: " + ", ".join(t.name for t in step.outputs))
    return "\n".join(lines)


def _node_svg(plan: Plan, geo: Layout, name: str, state: StepView | None,
              href: Callable[[str], str | None] | None) -> str:
    b = geo.boxes[("step", name)]
    status = state.status if state is not None else None
    stroke = COLORS[status] if status else PLAN_STROKE
    fill = FILLS[status] if status else "#ffffff"
    muted = status in ("pending", "skipped")
    ink = "#616161" if muted else "#212121"
    left, top = b.x - b.w / 2, b.y - b.h / 2
    rect = (f'<rect x="{num(left)}" y="{num(top)}" width="{num(b.w)}" height="{num(b.h)}" rx="6" '
            f'fill="{fill}" stroke="{stroke}" stroke-width="{2.5 if status == "failed" else 1.5}"')
    if status == "skipped":
        rect += ' stroke-dasharray="4 3"/>'
    elif status == "running":  # marching dashes: SMIL, no script, no stylesheet
        rect += (' stroke-dasharray="7 4"><animate attributeName="stroke-dashoffset" values="0;-22" dur="1s" '
                 'repeatCount="indefinite"/></rect>')
    else:
        rect += "/>"
    if plan.steps[name].foreach:  # a stack of cards: one step, many items
        rect = "".join(f'<rect class="kale-node-stack" x="{num(left + d)}" y="{num(top - d)}" width="{num(b.w)}" '
                       f'height="{num(b.h)}" rx="6" fill="{fill}" stroke="{stroke}" stroke-width="1"/>'
                       for d in (6, 3)) + rect
    first = top + 19
    icon = (f'<text class="kale-node-icon" x="{num(left + PAD)}" y="{num(first)}" fill="{stroke}" '
            f'font-size="{NAME_SIZE}">{ICONS[status]}</text>') if status else ""
    label = (f'<text class="kale-node-name" x="{num(left + PAD + (ICON if status else 0))}" y="{num(first)}" '
             f'font-size="{NAME_SIZE}" font-weight="bold" fill="{ink}">{text(_title(name, state))}</text>')
    detail = _detail(plan, name)
    if detail:
        kind, tint = ("condition", CONDITION_STROKE) if plan.steps[name].options.condition else ("params", "#616161")
        label += (f'<text class="kale-node-{kind}" x="{num(left + PAD)}" y="{num(first + 15)}" '
                  f'font-size="{DETAIL_SIZE}" fill="{tint}">{text(detail)}</text>')
    node = (f'<g class="kale-node" data-step="{text(name)}" data-status="{status or "planned"}">'
            f'<title>{text(_tooltip(plan, name, state))}</title>{rect}{icon}{label}</g>')
    target = href(name) if href and status == "failed" else None
    if target and (target.startswith("/") or urlsplit(target).scheme):
        # Only links a frontend leaves alone: JupyterLab rewrites a relative link by assigning its
        # .href, which an SVG <a> does not have ("Javascript Error" under the panel); the row below
        # the graph links to the same files.
        extra = new_tab(target)
        node = f'<a class="kale-error-link" href="{text(target)}"{extra}>{node}</a>'
    return node


def graph_svg(plan: Plan, steps: Mapping[str, StepView] | None = None, *,
              href: Callable[[str], str | None] | None = None, geometry: Layout | None = None) -> str:
    """The pipeline as one ``<svg>``: planned (no ``steps``) or with each step's run state.

    ``href(step)`` gives the link of a failed node (its error); ``geometry`` is a
    :func:`layout` of ``plan`` computed earlier (views redraw without laying out again).
    """
    geo = geometry or layout(plan)
    steps = steps or {}
    label = f"pipeline {plan.pipeline}: {len(plan.steps)} steps"
    parts = [svg_open(geo.width, geo.height, "kale-graph", label)]
    parts += [_edge_svg(plan, geo, edge) for edge in geo.edges]
    parts += [_value_svg(plan, geo, key) for key in geo.boxes if key[0] == "value"]
    parts += [_node_svg(plan, geo, name, steps.get(name), href) for name in plan.steps]
    parts.append("</svg>")
    return "".join(parts)


def graph_html(plan: Plan, steps: Mapping[str, StepView] | None = None, **kwargs) -> str:
    """:func:`graph_svg` in a box that scrolls beyond :data:`~.svg.MAX_HEIGHT`."""
    shown = f"The pipeline's graph ({len(plan.steps)} steps) shows once the notebook is trusted"
    return box(graph_svg(plan, steps, **kwargs), "kale-graph-box", shown)


class LiveGraph:
    """A run's graph for a view that redraws often: laid out once, drawn again only when a step changes."""

    def __init__(self):
        self._plan: Plan | None = None
        self._geometry: Layout | None = None
        self._drawn: tuple[tuple, str] = ((), "")

    def html(self, plan: Plan, steps: Mapping[str, StepView], href: Callable[[str], str | None]) -> str:
        if plan is not self._plan:
            self._plan, self._geometry, self._drawn = plan, layout(plan), ((), "")
        seen = tuple((n, s.status, s.message, s.cached_from, href(n) if s.status == "failed" else None,
                      tuple(i.status for i in getattr(s, "items", None) or ())) for n, s in steps.items())
        if seen != self._drawn[0]:
            self._drawn = (seen, graph_html(plan, steps, href=href, geometry=self._geometry))
        return self._drawn[1]
