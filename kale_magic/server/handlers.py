"""The handler behind ``<base url>/kale-magic/files/<path>``: run files, read-only, for the server's users.

Requests may name anything, so every error is a 404, never a 500: names that do not exist or
cannot (not UTF-8, a NUL byte, too long, a symlink loop),
anything outside a ``.kale/`` folder of the root, and anything but folders and regular files —
a FIFO or device named ``*.ipynb`` would block the thread that opens it for ever.  Notebooks are
rendered on a small executor of the extension's own, each within a timeout, and only up to
:data:`.pages.RENDER_MAX` bytes (the raw file is offered beyond), so no request can exhaust the
server's threads or memory.
"""

from __future__ import annotations

import asyncio
import html
import mimetypes
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import AuthenticatedFileHandler, JupyterHandler
from jupyter_server.utils import url_path_join
from tornado import web

from ..files import atomic_write
from ..layout import KALE_DIR, KaleDir
from . import pages
from .address import OPEN_ROUTE

# Where a copied notebook opens: the first of these frontends the server loaded.
FRONTENDS = (("jupyterlab", "lab/tree"), ("notebook", "notebooks"))
# Shown in the browser rather than downloaded.
TEXT = frozenset({".log", ".txt", ".yaml", ".yml", ".py", ".md", ".csv", ".cfg", ".toml"})
RENDER_THREADS = 2
RENDER_TIMEOUT = 60.0  # seconds a rendering may take, waiting for a thread included


class Renderer:
    """The extension's own threads for rendering pages: bounded, so slow or huge notebooks queue here
    instead of taking the server's default executor (contents, kernels) with them."""

    def __init__(self, threads: int = RENDER_THREADS, timeout: float = RENDER_TIMEOUT):
        self.executor = ThreadPoolExecutor(threads, thread_name_prefix="kale-render")
        self.timeout = timeout

    async def render(self, name: str, render) -> str:
        future = asyncio.wrap_future(self.executor.submit(render))
        try:
            return await asyncio.wait_for(future, self.timeout)
        except asyncio.TimeoutError:
            raise web.HTTPError(503, "rendering %s took over %s s", name, self.timeout) from None


class RunFilesHandler(AuthenticatedFileHandler):
    """Jupyter's own authenticated file handler, limited to ``.kale/`` folders and extended
    with folder indexes and rendered notebooks.  Its pages run no scripts (a sandboxed
    origin), so nothing a step printed can act as the user on the server."""

    def initialize(self, path: str, renderer: Renderer) -> None:
        super().initialize(path)
        self.renderer = renderer

    @property
    def content_security_policy(self) -> str:
        return JupyterHandler.content_security_policy.fget(self) + "; sandbox"

    def decode_argument(self, value: bytes, name: str | None = None) -> str:
        """Bytes that are not UTF-8 are kept (as surrogates) for ``_target`` to refuse with a 404: tornado's
        own 400 for them reaches Jupyter's error page before the user is known, which fails with a
        traceback in the server's log."""
        return value.decode("utf-8", "surrogateescape")

    @web.authenticated
    @authorized
    async def get(self, path: str, include_body: bool = True) -> None:
        self.check_xsrf_cookie()
        target, folder = _target(self.root, path)
        # The page is sandboxed (an opaque origin), so a click on its link sends no Referer: the link
        # carries the XSRF token for the opener's cross-site check instead.
        opener = (url_path_join(self.base_url, OPEN_ROUTE, quote(path.strip("/")))
                  + "?_xsrf=" + quote(self.xsrf_token.decode()))
        render = None if folder else pages.page_for(target, bool(self.get_argument("raw", None)), opener)
        if folder:
            self.finish(self._index(target))
        elif render is not None:
            self.finish(await self.renderer.render(target.name, render))
        else:
            await web.StaticFileHandler.get(self, path, include_body)

    def validate_absolute_path(self, root: str, absolute_path: str) -> str | None:
        """Tornado's checks without Jupyter's refusal of hidden files (``get`` checked the path)."""
        return web.StaticFileHandler.validate_absolute_path(self, root, absolute_path)

    def get_content_type(self) -> str:
        suffix = Path(self.absolute_path or "").suffix.lower()
        if suffix in TEXT:
            return "text/plain; charset=UTF-8"
        if suffix in (".json", ".ipynb"):
            return "application/json; charset=UTF-8"
        return mimetypes.guess_type(self.absolute_path or "")[0] or "application/octet-stream"

    def _index(self, folder: Path) -> str:
        """The folder's entries this handler serves; symlinks that lead outside the root's ``.kale/``
        folders, special files and names that are not UTF-8 are left out (their names included)."""
        here = self.request.path.rstrip("/")
        root = Path(self.root).resolve()
        entries = []
        for entry in os.scandir(folder):
            kind = _kind(root, Path(entry.path)) if _utf8(entry.name) else None
            if kind is not None:
                entries.append((not kind[1], entry.name))
        items = [f'<li><a href="{html.escape(here + "/" + quote(name))}">{html.escape(name)}'
                 f'{"" if is_file else "/"}</a></li>' for is_file, name in sorted(entries)]
        if folder.name != KALE_DIR:
            items.insert(0, f'<li><a href="{html.escape(here.rsplit("/", 1)[0])}">../</a></li>')
        return pages.page(folder.relative_to(root).as_posix() + "/",
                          "<ul>" + "".join(items) + "</ul>" if entries else "<p>(empty)</p>")


class OpenHandler(JupyterHandler):
    """``<base url>/kale-magic/open/<path>.ipynb``: a run's notebook opened in JupyterLab.

    JupyterLab opens files through the server's contents manager, which refuses anything under
    a hidden folder unless the server was started with ``allow_hidden``; so the notebook is
    copied to the visible ``kale-notebooks/`` beside its ``.kale/`` (:meth:`KaleDir.opened_copy`)
    and the browser is sent there.  The copy is made once: a later click opens the same copy,
    with whatever the user changed in it, and the run's own file stays as the run wrote it.
    Writing a file, the request needs the right to write contents, and it is refused from other
    sites: a GET without the XSRF token the rendered page's link carries must have a same-site Referer."""

    auth_resource = "contents"

    def initialize(self, path: str, renderer: Renderer) -> None:
        self.root = path
        self.renderer = renderer

    @web.authenticated
    @authorized("write")
    async def get(self, path: str) -> None:
        self.check_xsrf_cookie()
        target, folder = _target(self.root, path)
        if folder or target.suffix != ".ipynb":
            raise web.HTTPError(404)
        route = self._frontend()
        copy = await self.renderer.render(target.name, lambda: _copy_once(target))
        relative = Path(copy).relative_to(Path(self.root).resolve()).as_posix()
        self.redirect(url_path_join(self.base_url, route, quote(relative)))

    def _frontend(self) -> str:
        extensions = self.serverapp.extension_manager.extensions
        for name, route in FRONTENDS:
            if name in extensions and extensions[name].enabled:
                return route
        raise web.HTTPError(404, "neither JupyterLab nor Notebook 7 runs in this server")


def _copy_once(notebook: Path) -> str:
    """The visible copy of a run's ``notebook``, written unless it exists, in a folder whose
    ``.gitignore`` keeps the copies out of git and of kale-magic's own snapshots."""
    kale = KaleDir.containing(next(p for p in notebook.parents if p.name == KALE_DIR))
    copy = kale.opened_copy(notebook)
    if not copy.exists():
        ignore = kale.opened / ".gitignore"
        if not ignore.exists():
            atomic_write(ignore, "# copies of kale-magic's run notebooks, opened in JupyterLab\n*\n")
        content = pages.read_regular(notebook, limit=None)
        copy.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(copy, content)
    return str(copy)


def _target(root: str, path: str) -> tuple[Path, bool]:
    """The regular file or folder asked for, when it is inside a ``.kale/`` folder under ``root``,
    and whether it is a folder; 404 for anything else."""
    parts = path.strip("/").split("/")
    if any(part in ("", ".", "..") or not _utf8(part) for part in parts) or KALE_DIR not in parts:
        raise web.HTTPError(404)
    kind = _kind(Path(root).resolve(), Path(root, *parts))
    if kind is None:
        raise web.HTTPError(404)
    return kind


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes, kept as surrogates
        return False
    return True


def _kind(root: Path, path: Path) -> tuple[Path, bool] | None:
    """(the resolved path, whether it is a folder) when ``path`` is a folder or regular file inside a
    ``.kale/`` folder under ``root``, symlinks followed; None for anything else or what cannot be
    resolved (a NUL byte, a name too long, a symlink loop, no such file)."""
    try:
        target = path.resolve()  # symlinks followed: they must stay inside too
        inside = target.relative_to(root).parts
        mode = target.stat().st_mode
    except (OSError, RuntimeError, ValueError):  # RuntimeError: a symlink loop (Python < 3.13)
        return None
    if KALE_DIR not in inside or not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
        return None
    return target, stat.S_ISDIR(mode)
