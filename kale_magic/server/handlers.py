"""The handler behind ``<base url>/kale-magic/files/<path>``: run files, read-only, for the server's users."""

from __future__ import annotations

import asyncio
import html
import mimetypes
from pathlib import Path
from urllib.parse import quote

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import AuthenticatedFileHandler, JupyterHandler
from tornado import web

from ..layout import KALE_DIR
from . import pages

# Shown in the browser rather than downloaded.
TEXT = frozenset({".log", ".txt", ".yaml", ".yml", ".py", ".md", ".csv", ".cfg", ".toml"})


class RunFilesHandler(AuthenticatedFileHandler):
    """Jupyter's own authenticated file handler, limited to ``.kale/`` folders and extended
    with folder indexes and rendered notebooks.  Its pages run no scripts (a sandboxed
    origin), so nothing a step printed can act as the user on the server."""

    @property
    def content_security_policy(self) -> str:
        return JupyterHandler.content_security_policy.fget(self) + "; sandbox"

    @web.authenticated
    @authorized
    async def get(self, path: str, include_body: bool = True) -> None:
        self.check_xsrf_cookie()
        target = self._target(path)
        render = None if target.is_dir() else pages.page_for(target, bool(self.get_argument("raw", None)))
        if target.is_dir():
            self.finish(self._index(target))
        elif render is not None:
            self.finish(await asyncio.to_thread(render))  # not on the server's loop
        else:
            await web.StaticFileHandler.get(self, path, include_body)

    def _target(self, path: str) -> Path:
        """The file or folder asked for, when it is inside a ``.kale/`` folder under the root."""
        parts = path.strip("/").split("/")
        if any(part in ("", ".", "..") for part in parts) or KALE_DIR not in parts:
            raise web.HTTPError(404)
        root = Path(self.root).resolve()
        target = (root / "/".join(parts)).resolve()  # symlinks followed: they must stay inside too
        try:
            inside = target.relative_to(root).parts
        except ValueError:
            raise web.HTTPError(404) from None
        if KALE_DIR not in inside or not target.exists():
            raise web.HTTPError(404)
        return target

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
        here = self.request.path.rstrip("/")
        entries = sorted(folder.iterdir(), key=lambda p: (not p.is_dir(), p.name))
        items = [f'<li><a href="{html.escape(here + "/" + quote(p.name))}">'
                 f'{html.escape(p.name)}{"/" if p.is_dir() else ""}</a></li>' for p in entries]
        if folder.name != KALE_DIR:
            items.insert(0, f'<li><a href="{html.escape(here.rsplit("/", 1)[0])}">../</a></li>')
        root = Path(self.root).resolve()
        return pages.page(folder.relative_to(root).as_posix() + "/",
                          "<ul>" + "".join(items) + "</ul>" if entries else "<p>(empty)</p>")

