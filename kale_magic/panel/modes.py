"""The panel's views by name (``Kale.panel``); kept apart so the magics import no view code."""

MODES = ("auto", "widget", "html", "text")
