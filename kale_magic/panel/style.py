"""The panel's vocabulary, shared by its rows and its pictures: status icons and colours,
escaping, durations, new-tab links.

One place, so a step's node in the graph, its bar in the timeline and its row
look alike, and every picture escapes user text the same way.
"""

from __future__ import annotations

import html
import re
from urllib.parse import urlsplit

from ..text import printable

ICONS = {
    "pending": "○", "running": "◔", "done": "✓", "succeeded": "✓",
    "failed": "✗", "cached": "↺", "skipped": "–",
}
COLORS = {
    "pending": "#757575", "running": "#1565c0", "done": "#2e7d32", "succeeded": "#2e7d32",
    "failed": "#c62828", "cached": "#00838f", "skipped": "#9e9e9e",
}
FAILED_FILL = "#fdecea"  # behind a failed row, inside a failed node
_COLOUR = re.compile(r"\x1b\[[0-9;]*m")


def plain(text: object) -> str:
    """User text without terminal colour codes (tracebacks from IPython carry them) and with every
    other control character escaped (:func:`~kale_magic.text.printable`): safe to print."""
    return printable(_COLOUR.sub("", str(text)), lines=True)


def esc(text: object) -> str:
    return html.escape(plain(text), quote=True)


def seconds(value: float | None) -> str:
    if value is None:
        return ""
    if value < 10:
        return f"{value:.2f} s"
    if value < 60:
        return f"{value:.1f} s"
    minutes, secs = divmod(int(round(value)), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    return f"{minutes // 60} h {minutes % 60} min"


def new_tab(href: str) -> str:
    """The attributes of a link that opens in a new tab: other sites without a referrer; the Jupyter
    server's own file handler with one (its cross-site check accepts a same-origin Referer)."""
    if urlsplit(href).scheme in ("http", "https"):
        return ' target="_blank" rel="noopener noreferrer"'
    return ' target="_blank" rel="noopener"' if href.startswith("/") else ""


def items_summary(step) -> str:
    """A foreach step's items in one phrase: ``×5: 3 ✓ 1 ◔ 1 ✗`` (the states in a fixed order)."""
    counts: dict[str, int] = {}
    for item in step.items or ():
        counts[item.status] = counts.get(item.status, 0) + 1
    order = ("succeeded", "cached", "running", "pending", "failed", "skipped")
    states = " ".join(f"{counts[s]} {ICONS[s]}" for s in order if counts.get(s))
    return f"×{len(step.items)}" + (f": {states}" if states else "")
