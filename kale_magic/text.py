"""User text made safe for a terminal: control characters shown escaped, never sent.

Parameter values, experiment and step names and errors come from notebooks, command lines and
run stores; printed verbatim, an escape sequence in one of them would recolour the terminal,
retitle its window, erase lines or move the cursor over what was printed before.  Every C0 and
C1 control character (ESC, CSI, BEL, backspace, carriage return, DEL…) is written as Python
writes it in a string literal (``\\x1b``), so the user sees that it is there.
"""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_BUT_LINES = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # keeps \t and \n
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escaped(match: re.Match) -> str:
    char = match.group()
    return _NAMED.get(char) or f"\\x{ord(char):02x}"


def printable(text: object, lines: bool = False) -> str:
    """``text`` with its control characters escaped; ``lines`` keeps tabs and line breaks (tracebacks,
    messages), otherwise the text stays on one line (names, values, table cells)."""
    return (_CONTROL_BUT_LINES if lines else _CONTROL).sub(_escaped, str(text))
