"""Small helpers shared by the SVG pictures (pipeline graph, run timeline).

The pictures are strings built by hand: no drawing library, and the same input
gives the same bytes.  Text is measured as monospace cells because the browser's
font metrics are not known in the kernel; both pictures draw in a monospace font
so the estimate holds.

An untrusted notebook's output goes through JupyterLab's HTML sanitizer, which drops
``<svg>`` elements but keeps the words inside them (every node, label and tooltip, run
together into one paragraph) and drops ``<style>`` elements.  So a picture sits in a
wrapper hidden by its own inline style, which only the box's stylesheet overrides, and
is followed by one fallback line that the same stylesheet hides: stripped, the box shows
just that line (see :func:`box`).
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
# How to get a picture back where a sanitizer stripped it (the end of its fallback line).
TRUST = " (rerun the cell, or Trust Notebook in JupyterLab's command palette)"
# Trusted output keeps this stylesheet: the picture shows, the fallback line does not.  The :has() rules
# keep a stripped box showing its line when a trusted output elsewhere on the page brought the stylesheet
# (browsers without :has() skip those two rules, and trusted boxes still show their pictures).
_BOX_STYLE = ("<style>.kale-picture{display:block!important}.kale-untrusted{display:none}"
              ".kale-picture:not(:has(svg)){display:none!important}"
              ".kale-picture:not(:has(svg))+.kale-untrusted{display:block}</style>")
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


def box(svg: str, css_class: str, fallback: str) -> str:
    """A picture in a box that scrolls beyond :data:`MAX_HEIGHT` (and the output's width); ``fallback``
    is the one line the box shows instead where a sanitizer stripped the picture (see the module)."""
    return (f'<div class="{css_class}" style="max-height:{MAX_HEIGHT}px;max-width:100%;overflow:auto;'
            f'padding:4px 6px">{_BOX_STYLE}<div class="kale-picture" style="display:none">{svg}</div>'
            f'<div class="kale-untrusted" style="font-size:11px;color:#616161">{html.escape(fallback + TRUST)}'
            "</div></div>")
