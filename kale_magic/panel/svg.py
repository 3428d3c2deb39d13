"""Small helpers shared by the SVG pictures (pipeline graph, run timeline).

The pictures are strings built by hand: no drawing library, and the same input
gives the same bytes.  Text is measured as monospace cells because the browser's
font metrics are not known in the kernel; both pictures draw in a monospace font
so the estimate holds.
"""

from __future__ import annotations

import html
import re
import unicodedata
from typing import Protocol

from .style import plain

FONT = "ui-monospace,SFMono-Regular,Menlo,Consolas,'DejaVu Sans Mono',monospace"
CELL = 0.6  # a monospace cell is about 0.6 em wide
MAX_HEIGHT = 480  # px: a picture's box scrolls beyond this
# Characters XML 1.0 forbids even as references: an SVG holding one would not parse.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class StepView(Protocol):
    """What the pictures read of a step's run state (``StepState`` has these)."""

    @property
    def status(self) -> str: ...
    @property
    def started(self) -> float | None: ...
    @property
    def ended(self) -> float | None: ...
    @property
    def message(self) -> str: ...
    @property
    def cached_from(self) -> str | None: ...


def text(value: object) -> str:
    """User text safe inside an SVG element or attribute (escaped, colour codes and XML-invalid characters gone)."""
    return html.escape(_NOT_XML.sub("", plain(value)), quote=True)


def cells(value: str) -> int:
    """Width of ``value`` in monospace cells: wide East Asian characters take two, combining marks none."""
    width = 0
    for char in value:
        if unicodedata.combining(char):
            continue
        width += 2 if unicodedata.east_asian_width(char) in "WF" else 1
    return width


def clip(value: str, limit: int) -> str:
    """``value`` cut to ``limit`` cells with an ellipsis (the whole text goes in a tooltip)."""
    if cells(value) <= limit:
        return value
    out, width = "", 0
    for char in value:
        width += cells(char)
        if width > limit - 1:
            break
        out += char
    return out + "…"


def width(value: str, font_size: float) -> float:
    return cells(value) * CELL * font_size


def num(value: float) -> str:
    """Coordinates with one decimal and no trailing zero: stable, short output."""
    out = f"{value:.1f}"
    return out[:-2] if out.endswith(".0") else out


def svg_open(width_px: float, height_px: float, css_class: str, label: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="{css_class}" width="{num(width_px)}" '
            f'height="{num(height_px)}" viewBox="0 0 {num(width_px)} {num(height_px)}" role="img" '
            f'aria-label="{text(label)}" font-family="{FONT}" font-size="12">')


def box(svg: str, css_class: str) -> str:
    """A picture in a box that scrolls beyond :data:`MAX_HEIGHT` (and the output's width)."""
    return (f'<div class="{css_class}" style="max-height:{MAX_HEIGHT}px;max-width:100%;overflow:auto;'
            f'padding:4px 6px">{svg}</div>')
