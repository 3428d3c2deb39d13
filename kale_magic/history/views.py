"""What ``%kale_runs`` shows: runs side by side, a metric over runs, two runs compared.

Functions take :class:`~kale_magic.history.store.RunRecord` lists and return displayable
objects (``_repr_html_`` for notebooks, ``repr`` text for terminals).  pandas is
used when installed, so the table is also a DataFrame the user can work with.
"""

from __future__ import annotations

import html
import math
import re
import time
from numbers import Real

from ..text import printable
from .store import RunRecord

_LOWER_IS_BETTER = re.compile(r"loss|err|mse|mae|rmse|perplexity|latency|time|duration|cost", re.I)
_BEST = "background-color:#c8e6c9;font-weight:bold"


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def lower_is_better(metric: str) -> bool:
    """Losses, errors and times improve downwards; every other metric upwards."""
    return bool(_LOWER_IS_BETTER.search(metric))


def _number(value) -> float | None:
    if isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def best_run(records: list[RunRecord], metric: str) -> str | None:
    scored = [(_number(r.metrics.get(metric)), r.run_id) for r in records]
    scored = [(v, run) for v, run in scored if v is not None]
    if not scored:
        return None
    pick = min if lower_is_better(metric) else max
    return pick(scored, key=lambda item: item[0])[1]


def _names(records: list[RunRecord], attr: str) -> list[str]:
    seen: dict[str, None] = {}
    for record in records:
        seen.update(dict.fromkeys(getattr(record, attr)))
    return list(seen)


def _when(started: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started))


def _columns(records):
    """(column label, kind, key) for parameters then metrics; a metric named like a parameter gets a prefix."""
    params = _names(records, "parameters")
    metrics = _names(records, "metrics")
    return ([(p, "parameters", p) for p in params]
            + [(f"metric:{m}" if m in params else m, "metrics", m) for m in metrics])


def short_ids(records: list[RunRecord]) -> dict[str, str]:
    """run id -> what to show: its random last part (``3fa2c1`` of ``20261201-104512-3fa2c1``), which
    ``%kale_runs --compare``, ``kale-magic show`` and ``--resume`` accept; the whole id where two would clash."""
    tails = [record.run_id.rsplit("-", 1)[-1] for record in records]
    return {record.run_id: tail if tails.count(tail) == 1 else record.run_id
            for record, tail in zip(records, tails)}


def _rows(records, short: bool = False):
    """(run id, column -> value); a failed run's error is a column too, so no failed row lacks its reason."""
    columns = _columns(records)
    errors = any(record.error for record in records)
    scheduled = any("scheduled by" in record.links for record in records)
    swept = any(record.sweep_id for record in records)
    partial = any(partial_steps(record) for record in records)
    shown = short_ids(records) if short else {r.run_id: r.run_id for r in records}
    for record in records:
        fixed = {"experiment": record.experiment, "pipeline": record.pipeline, "started": _when(record.started),
                 "status": record.status, "engine": record.engine}
        if scheduled:  # runs a KFP schedule started (recorded by %kale_schedules): which schedule
            fixed["schedule"] = record.links.get("scheduled by", "")
        if swept:  # points of a sweep (%kale_run --sweep): which sweep, as %kale_runs --sweep takes it
            fixed["sweep"] = (record.sweep_id or "").rsplit("-", 1)[-1]
        if partial:  # --only/--from/--to: which steps ran, which were reused from which run, which not run
            fixed["steps"] = partial_steps(record)
        values = fixed | {label: getattr(record, kind).get(key) for label, kind, key in columns}
        yield shown[record.run_id], values | ({"error": record.error} if errors else {})


def partial_steps(record: RunRecord) -> str:
    """A partial run's steps in one cell (empty for a whole run): never a failure for what it left alone."""
    from ..skips import NOT_SELECTED

    unselected = [s for s in record.steps if s.skip == NOT_SELECTED and s.status in ("cached", "skipped")]
    if not unselected:
        return ""
    ran = [s.name for s in record.steps if s not in unselected]
    sources: dict[str, list[str]] = {}
    for step in unselected:
        if step.status == "cached":
            sources.setdefault(step.cached_from or "", []).append(step.name)
    left = [s.name for s in unselected if s.status == "skipped"]
    parts = [f"ran {', '.join(ran)}"] + [f"{', '.join(names)} reused from run {run.rsplit('-', 1)[-1]}"
                                          for run, names in sources.items()]
    return "; ".join(parts + ([f"{', '.join(left)} not run"] if left else []))


class RunsTable:
    """Runs side by side: parameters and metrics as columns, the best value of each metric highlighted."""

    def __init__(self, records: list[RunRecord], plot: str | None = None, short: bool = False,
                 by: str | None = None):
        self.records = records
        self.plot = plot
        self.by = by  # plot the metric against this parameter (sweeps), not over runs
        self.short = short  # rows named by short run ids (a notebook's view)
        self.metrics = _names(records, "metrics")
        self.frame = self._frame()

    def _frame(self):
        try:
            import pandas as pd
        except ImportError:
            return None
        rows = dict(_rows(self.records, self.short))
        labels = list(next(iter(rows.values()), {}))
        frame = pd.DataFrame({label: _column(pd, [values[label] for values in rows.values()]) for label in labels},
                             index=pd.Index(list(rows), name="run"))
        return frame

    def _metric_label(self, metric: str) -> str:
        return next(label for label, kind, key in _columns(self.records) if kind == "metrics" and key == metric)

    def _best_cells(self) -> dict[str, str]:
        """column label -> run id holding the best value."""
        shown = short_ids(self.records) if self.short else {r.run_id: r.run_id for r in self.records}
        best = {self._metric_label(m): best_run(self.records, m) for m in self.metrics}
        return {label: shown[run] for label, run in best.items() if run is not None}

    def _table_html(self) -> str:
        if not self.records:
            return "<p><i>No runs recorded yet.</i></p>"
        best = self._best_cells()
        if self.frame is not None:
            try:
                return self._styled(best)
            except ImportError:  # Styler needs jinja2
                pass
        rows = list(_rows(self.records, self.short))
        headers = ["run", *rows[0][1]]
        head = "".join(f"<th>{esc(h)}</th>" for h in headers)
        body = "".join(
            "<tr>" + f"<td><code>{esc(run)}</code></td>" + "".join(
                f'<td style="{_BEST if best.get(col) == run else ""}">{esc("" if v is None else v)}</td>'
                for col, v in values.items()) + "</tr>"
            for run, values in rows)
        return f'<table class="kale-runs"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'

    def _styled(self, best: dict[str, str]) -> str:
        def highlight(column):
            return [_BEST if best.get(column.name) == run else "" for run in column.index]

        styler = self.frame.style.format(_cell, escape="html")
        styler = styler.format_index(escape="html", axis=0).format_index(escape="html", axis=1)
        styler = styler.apply(highlight, subset=list(best))
        return styler.set_table_attributes('class="kale-runs"').to_html()

    def _repr_html_(self) -> str:
        out = self._table_html()
        if self.plot and self.by:
            out += by_svg(self.records, self.plot, self.by)
        elif self.plot:
            out += metric_svg(self.records, self.plot)
        return out

    def __repr__(self) -> str:
        if not self.records:
            return "No runs recorded yet."
        if self.frame is not None:
            # missing values blank; the run id a column, so the header is one line and each run one line
            frame = self.frame.astype(object).where(self.frame.notna(), "").reset_index()
            text = _printable_frame(frame).to_string(index=False)
        else:
            text = "\n".join(f"{printable(run)}  " + "  ".join(f"{printable(k)}={printable(v)}"
                                                               for k, v in values.items())
                             for run, values in _rows(self.records, self.short))
        best = [f"{printable(m)}: {printable(run)}" for m, run in self._best_cells().items()]
        if best:
            text += "\nbest  " + ", ".join(best)
        if self.plot and self.by:
            text += "\n" + by_text(self.records, self.plot, self.by)
        elif self.plot:
            shown = short_ids(self.records) if self.short else None
            text += "\n" + metric_text(self.records, self.plot, shown)
        return text


def _printable_frame(frame):
    """The table as a terminal may show it: text in cells and labels with control characters escaped
    (missing values are blank already)."""
    shown = frame.apply(lambda column: column.map(lambda v: printable(v) if isinstance(v, str) else v))
    shown.index = shown.index.map(printable)
    shown.columns = [printable(label) for label in shown.columns]
    return shown


def _column(pd, values: list):
    """A column keeping each value's kind: integers stay integers when some runs lack them."""
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pd.array(values, dtype="Int64")
    return pd.Series(values, dtype=object).infer_objects().array


def metric_points(records: list[RunRecord], metric: str) -> list[tuple[str, float]]:
    return [(r.run_id, v) for r in records if (v := _number(r.metrics.get(metric))) is not None]


def metric_text(records: list[RunRecord], metric: str, shown: dict[str, str] | None = None) -> str:
    points = metric_points(records, metric)
    return (f"{printable(metric)} over runs: "
            + (", ".join(f"{printable((shown or {}).get(run, run))}={v:g}" for run, v in points) or "no values"))


def metric_svg(records: list[RunRecord], metric: str, width: int = 420, height: int = 160) -> str:
    """A small inline SVG line chart of ``metric`` over runs (oldest first); no plotting library."""
    points = metric_points(records, metric)
    title = f'<div style="font-size:12px;margin-top:6px"><b>{esc(metric)}</b> over runs</div>'
    if not points:
        return title + f"<p><i>No run has a numeric {esc(metric)}.</i></p>"
    left, right, top, bottom = 48, 12, 10, 24
    low, high = min(v for _, v in points), max(v for _, v in points)
    span = (high - low) or 1.0
    step = (width - left - right) / max(len(points) - 1, 1)

    def xy(i, v):
        return left + i * step, top + (high - v) / span * (height - top - bottom)

    coords = [xy(i, v) for i, (_, v) in enumerate(points)]
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
    dots = "".join(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="#1565c0"><title>{esc(run)}: {v:g}'
                   f"</title></circle>" for (x, y), (run, v) in zip(coords, points))
    labels = (f'<text x="{left - 4}" y="{top + 4}" text-anchor="end">{high:.4g}</text>'
              f'<text x="{left - 4}" y="{height - bottom}" text-anchor="end">{low:.4g}</text>'
              f'<text x="{left}" y="{height - 6}">{esc(points[0][0])}</text>'
              f'<text x="{width - right}" y="{height - 6}" text-anchor="end">{esc(points[-1][0])}</text>')
    return (title + f'<svg class="kale-plot" xmlns="http://www.w3.org/2000/svg" width="{width}" '
            f'height="{height}" font-size="10" font-family="sans-serif">'
            f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="#999"/>'
            f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" '
            f'stroke="#999"/><polyline points="{line}" fill="none" stroke="#1565c0" stroke-width="1.5"/>'
            f"{dots}{labels}</svg>")


def by_lines(records: list[RunRecord], metric: str, by: str) -> dict[str, list[tuple[float, float]]]:
    """``metric`` against parameter ``by``: one line per combination of the other parameters that vary
    (its label, e.g. ``depth=3``), each a list of (parameter value, metric) sorted by the parameter."""
    varying = [n for n in _names(records, "parameters") if n != by
               and len({repr(r.parameters.get(n)) for r in records}) > 1]
    lines: dict[str, list[tuple[float, float]]] = {}
    for record in records:
        x, y = _number(record.parameters.get(by)), _number(record.metrics.get(metric))
        if x is None or y is None:
            continue
        label = " ".join(f"{n}={record.parameters.get(n)!r}" for n in varying) or metric
        lines.setdefault(label, []).append((x, y))
    return {label: sorted(points) for label, points in lines.items()}


def by_text(records: list[RunRecord], metric: str, by: str) -> str:
    lines = by_lines(records, metric, by)
    if not lines:
        return f"{printable(metric)} by {printable(by)}: no run has a numeric {printable(metric)} and {printable(by)}"
    return "\n".join(f"{printable(metric)} by {printable(by)} ({printable(label)}): "
                     + ", ".join(f"{x:g} -> {y:g}" for x, y in points) for label, points in lines.items())


_LINE_COLORS = ("#1565c0", "#c62828", "#2e7d32", "#6a1b9a", "#ef6c00", "#00838f", "#5d4037", "#455a64")


def by_svg(records: list[RunRecord], metric: str, by: str, width: int = 420, height: int = 180) -> str:
    """``metric`` against parameter ``by`` as an inline SVG, a line per combination of the other parameters."""
    lines = by_lines(records, metric, by)
    title = f'<div style="font-size:12px;margin-top:6px"><b>{esc(metric)}</b> by <b>{esc(by)}</b></div>'
    if not lines:
        return title + f"<p><i>No run has a numeric {esc(metric)} and {esc(by)}.</i></p>"
    xs = [x for points in lines.values() for x, _ in points]
    ys = [y for points in lines.values() for _, y in points]
    left, right, top, bottom = 48, 12, 10, 24
    x_span, y_span = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0

    def xy(x, y):
        return (left + (x - min(xs)) / x_span * (width - left - right),
                top + (max(ys) - y) / y_span * (height - top - bottom))

    parts, legend = [], []
    for number, (label, points) in enumerate(lines.items()):
        color = _LINE_COLORS[number % len(_LINE_COLORS)]
        coords = [xy(x, y) for x, y in points]
        parts.append(f'<polyline points="{" ".join(f"{a:.1f},{b:.1f}" for a, b in coords)}" fill="none" '
                     f'stroke="{color}" stroke-width="1.5"/>' + "".join(
                         f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3" fill="{color}"><title>{esc(label)}, {esc(by)}='
                         f"{x:g}: {y:g}</title></circle>" for (a, b), (x, y) in zip(coords, points)))
        legend.append(f'<span style="color:{color};margin-right:1em">&#9644; {esc(label)}</span>')
    labels = (f'<text x="{left - 4}" y="{top + 4}" text-anchor="end">{max(ys):.4g}</text>'
              f'<text x="{left - 4}" y="{height - bottom}" text-anchor="end">{min(ys):.4g}</text>'
              f'<text x="{left}" y="{height - 6}">{min(xs):g}</text>'
              f'<text x="{width - right}" y="{height - 6}" text-anchor="end">{max(xs):g}</text>')
    return (title + f'<svg class="kale-plot" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'font-size="10" font-family="sans-serif"><line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" '
            f'stroke="#999"/><line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" '
            f'stroke="#999"/>{"".join(parts)}{labels}</svg><div style="font-size:11px">{"".join(legend)}</div>')


def _cell(value) -> str:
    """Values as the user wrote them (no fixed precision); missing values (None, NaN, pandas' NA) blank."""
    missing = value is None or (isinstance(value, float) and math.isnan(value)) or type(value).__name__ == "NAType"
    return "" if missing else str(value)


def _change(a, b) -> str:
    return "" if a == b else "changed"


class RunComparison:
    """What changed from run ``a`` to run ``b``: parameters, metrics, steps' code and status."""

    def __init__(self, a: RunRecord, b: RunRecord):
        self.a, self.b = a, b
        self.parameters = [(n, a.parameters.get(n), b.parameters.get(n), _change(a.parameters.get(n),
                            b.parameters.get(n))) for n in _names([a, b], "parameters")]
        self.metrics = [(n, a.metrics.get(n), b.metrics.get(n), _delta(a.metrics.get(n), b.metrics.get(n)))
                        for n in _names([a, b], "metrics")]
        steps_a = {s.name: s for s in a.steps}
        steps_b = {s.name: s for s in b.steps}
        names = list(dict.fromkeys([*steps_a, *steps_b]))
        self.steps = [(n, _status(steps_a.get(n)), _status(steps_b.get(n)),
                       _code_change(steps_a.get(n), steps_b.get(n))) for n in names]

    @property
    def changed_steps(self) -> list[str]:
        return [name for name, _, _, change in self.steps if change not in ("same", "unknown")]

    def _sections(self):
        yield "Parameters", ("parameter", self.a.run_id, self.b.run_id, ""), self.parameters
        yield "Metrics", ("metric", self.a.run_id, self.b.run_id, "change"), self.metrics
        yield "Steps", ("step", self.a.run_id, self.b.run_id, "code"), self.steps

    def __repr__(self) -> str:
        lines = [printable(f"Comparing {self.a.run_id} ({self.a.status}) with {self.b.run_id} ({self.b.status})")]
        for title, _, rows in self._sections():
            lines.append(f"{title}:")
            lines += [f"  {printable(n)}: {printable(_show(x))} -> {printable(_show(y))}" + (f"  [{c}]" if c else "")
                      for n, x, y, c in rows]
            if not rows:
                lines.append("  (none)")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        parts = [f"<p>Comparing <code>{esc(self.a.run_id)}</code> ({esc(self.a.status)}) with "
                 f"<code>{esc(self.b.run_id)}</code> ({esc(self.b.status)})</p>"]
        for title, headers, rows in self._sections():
            head = "".join(f"<th>{esc(h)}</th>" for h in headers)
            body = "".join(
                f'<tr style="{_BEST if c not in ("", "same", "unknown") else ""}">'
                + "".join(f"<td>{esc(_show(v))}</td>" for v in (n, x, y, c)) + "</tr>"
                for n, x, y, c in rows) or '<tr><td colspan="4"><i>none</i></td></tr>'
            parts.append(f'<h4 style="margin:6px 0 2px">{title}</h4><table class="kale-compare">'
                         f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        return "".join(parts)


def _show(value) -> str:
    return "—" if value is None else str(value)


def _delta(a, b) -> str:
    x, y = _number(a), _number(b)
    if x is not None and y is not None:
        return "" if x == y else f"{y - x:+.4g}"
    return _change(a, b)


def _status(step) -> str | None:
    return None if step is None else step.status


def _code_change(a, b) -> str:
    if a is None:
        return "added"
    if b is None:
        return "removed"
    if not a.code_hash or not b.code_hash:
        return "unknown"
    return "same" if a.code_hash == b.code_hash else "changed"


def runs_view(store, *, experiment: str | None = None, last: int | None = None,
              plot: str | None = None, compare: tuple[str, str] | None = None, pipeline: str | None = None,
              short: bool = False, sweep: str | None = None, by: str | None = None):
    """The object ``%kale_runs`` returns for its options; ``pipeline`` keeps that pipeline's runs only,
    ``sweep`` the points of one sweep; ``by`` plots ``plot`` against that parameter."""
    from ..errors import KaleError

    if by and not plot:
        raise KaleError(f"--by {by} says what to plot a metric against; add --plot METRIC.")
    if compare:
        return RunComparison(store.get(compare[0]), store.get(compare[1]))
    records = store.runs(experiment=experiment, sweep=sweep)
    records = [r for r in records if pipeline is None or r.pipeline == pipeline]
    records = records[-last:] if last else records
    if by and records and all(by not in r.parameters for r in records):
        known = ", ".join(_names(records, "parameters")) or "none"
        raise KaleError(f"--by {by}: these runs have no parameter '{by}' (parameters: {known}).")
    return RunsTable(records, plot=plot, short=short, by=by)
