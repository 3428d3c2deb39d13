"""Run files as pages worth reading: what the handler sends instead of a file's raw bytes.

Kept apart from the handler (which decides *whether* a path may be served) so that
what a page looks like and who may see it change independently.  Each function
takes a path the handler already checked and returns a whole HTML page; ``None``
from :func:`page_for` means "serve the file as it is".
"""

from __future__ import annotations

import html
import json
import os
import re
import stat
from pathlib import Path
from typing import Callable

from ..files import human_size

EMPTY_LOG = "(this step printed nothing)"
PAGE = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title><style>"
        "body{{font-family:sans-serif;margin:1.5em}} li{{margin:0.2em 0;font-family:monospace}}"
        " pre{{background:#f5f5f5;padding:0.5em;overflow-x:auto}} .jp-OutputArea pre{{background:none}}"
        " .jp-Cell{{margin-bottom:1em}} .jp-OutputArea{{border-left:3px solid #ddd;padding-left:0.5em}}"
        " table{{border-collapse:collapse}} td,th{{padding:2px 8px;text-align:left;border-bottom:1px solid #eee}}"
        " td.num{{text-align:right}} .kale-note{{color:#616161;font-style:italic}}"
        "</style></head><body><h3>{title}</h3>{body}</body></html>")
RENDER_MAX = 25 * 2**20  # bytes of a file rendered as a page (a notebook costs ~5x that in memory to render)
_SCRIPT = re.compile(r"<script\b[^>]*>.*?</script>", re.S | re.I)


def page(title: str, body: str) -> str:
    return PAGE.format(title=html.escape(title), body=body)


def page_for(path: Path, raw: bool, opener: str | None = None) -> Callable[[], str] | None:
    """How to render ``path`` as a page (called off the server's loop: nbconvert takes a while), or None;
    ``opener`` is the URL that opens a notebook in JupyterLab."""
    if raw:
        return None
    if path.suffix == ".ipynb":
        return lambda: notebook_page(path, opener)
    if path.suffix == ".log" and path.stat().st_size == 0:
        return lambda: page(path.name, f'<p class="kale-note">{EMPTY_LOG}</p>')
    if path.name == "validation.txt":
        return lambda: text_page(path, "the plan as validated: steps, edges, the values that flow")
    if path.suffix == ".json" and path.parent.name == "manifests":
        return lambda: manifest_page(path)
    return None


def _raw_link(path: Path, what: str) -> str:
    return f'<p><a href="{html.escape(path.name)}?raw=1">{html.escape(what)}</a></p>'


def read_regular(path: Path, limit: int | None = RENDER_MAX) -> bytes | None:
    """The file's bytes, or None when it is larger than ``limit`` (None: no limit); opened without blocking
    and checked to be a regular file on the open descriptor, so a file swapped for a FIFO cannot hang
    the thread."""
    from tornado import web

    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise web.HTTPError(404)
        return None if limit is not None and info.st_size > limit else file.read()


def _too_large(path: Path) -> str:
    return page(path.name, f"<p>This file is {human_size(path.stat().st_size)}, too large to render here (the "
                           f"limit is {human_size(RENDER_MAX)}).</p>" + _raw_link(path, "Open the raw file"))


def notebook_page(path: Path, opener: str | None = None) -> str:
    """The executed step notebook as JupyterLab draws it (nbconvert's lab template: syntax and traceback
    colours, images), without its scripts: the page is sandboxed and runs none.  A bar on top links to
    the .ipynb file and to ``opener``, which opens it in JupyterLab.  Above :data:`RENDER_MAX`, a link
    to the raw file instead."""
    import nbformat
    from nbconvert import HTMLExporter

    content = read_regular(path)
    if content is None:
        return _too_large(path)
    notebook = nbformat.reads(content.decode("utf-8", "replace"), as_version=4)
    body, _ = HTMLExporter(template_name="lab").from_notebook_node(notebook)
    bar = (f'<div class="kale-page-bar" style="font-family:sans-serif;padding:6px 12px;border-bottom:1px solid '
           f'#ddd"><b>{html.escape(path.name)}</b> · <a href="{html.escape(path.name)}?raw=1" '
           f'download="{html.escape(path.name)}">the notebook file (.ipynb)</a>'
           + (f' · <a class="kale-open-lab" href="{html.escape(opener)}">open in JupyterLab</a>' if opener else "")
           + "</div>")
    return re.sub(r"<body([^>]*)>", lambda m: f"<body{m.group(1)}>{bar}", _SCRIPT.sub("", body), count=1)


def text_page(path: Path, what: str) -> str:
    content = read_regular(path)
    if content is None:
        return _too_large(path)
    text = content.decode("utf-8", "replace")
    body = (f'<p class="kale-note">{html.escape(what)}</p>' + _raw_link(path, "as plain text")
            + (f"<pre>{html.escape(text)}</pre>" if text.strip() else '<p class="kale-note">(empty)</p>'))
    return page(path.name, body)


def manifest_page(path: Path) -> str:
    """A snapshot manifest as tables: its files (size, content hash), what was left out, the environment."""
    content = read_regular(path)
    if content is None:
        return _too_large(path)
    try:
        data = json.loads(content)
        files = sorted(data["files"], key=lambda f: f["path"])
    except (ValueError, KeyError, TypeError):
        return page(path.name, '<p class="kale-note">(not a readable manifest)</p>' + _raw_link(path, "the JSON"))
    total = sum(f.get("size", 0) for f in files)
    rows = "".join(f'<tr><td>{html.escape(f["path"])}</td><td class="num">{human_size(f.get("size"))}</td>'
                   f'<td><code>{html.escape(str(f.get("xxh3_128") or f.get("sha256") or ""))[:16]}</code></td></tr>'
                   for f in files)
    parts = [f'<p>snapshot <code>{html.escape(str(data.get("id")))}</code> of '
             f'<code>{html.escape(str(data.get("root")))}</code>, taken {html.escape(str(data.get("created")))}: '
             f'{len(files)} files, {human_size(total)}</p>', _raw_link(path, "the manifest as JSON"),
             f"<table><thead><tr><th>file</th><th>size</th><th>content</th></tr></thead><tbody>{rows}</tbody></table>"]
    skipped = data.get("skipped") or []
    if skipped:
        parts.append("<h4>Left out</h4><ul>" + "".join(f"<li>{html.escape(_said(s))}</li>" for s in skipped) + "</ul>")
    environment = data.get("environment") or {}
    shown = {k: v for k, v in environment.items() if isinstance(v, (str, int, float))}
    if shown:
        parts.append("<h4>Environment</h4><table>" + "".join(
            f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in sorted(shown.items()))
            + "</table>")
    packages = environment.get("packages")
    if isinstance(packages, dict) and packages:
        parts.append(f"<details><summary>{len(packages)} installed distributions</summary><ul>" + "".join(
            f"<li>{html.escape(str(n))} {html.escape(str(v))}</li>" for n, v in sorted(packages.items()))
            + "</ul></details>")
    return page(f"snapshot {data.get('id', path.stem)}", "".join(parts))


def _said(entry) -> str:
    if isinstance(entry, dict):
        return " — ".join(str(v) for v in entry.values())
    return str(entry)
