"""A Jupyter server extension that serves the files of kale-magic runs, read-only.

Runs live in the hidden ``.kale/`` folder, which Jupyter's contents and files
handlers refuse unless the server allows hidden files; the panel's links (reports,
manifests, step notebooks, logs) point here instead, so they open in a server
started the default way.  ``pip install kale-magic`` enables it for every server
of that environment (``etc/jupyter/jupyter_server_config.d/kale_magic.json``);
``jupyter server extension list`` shows it.

It answers only users the server has authenticated and authorized to read
contents, only for paths inside a ``.kale/`` folder under the server's root, and
only GET and HEAD: folders as an index page, step notebooks rendered as HTML,
other files as they are.  A rendered notebook links to ``kale-magic/open/<path>``,
which copies it to ``kale-notebooks/`` beside ``.kale/`` (once) and opens the copy
in JupyterLab, whose contents manager will not open hidden folders.
"""

from __future__ import annotations

import os


def _jupyter_server_extension_points() -> list[dict]:
    return [{"module": "kale_magic.server"}]


def _load_jupyter_server_extension(serverapp) -> None:
    from jupyter_server.utils import url_path_join

    from .address import OPEN_ROUTE, ROUTE, FileServer
    from .handlers import OpenHandler, Renderer, RunFilesHandler

    base_url = serverapp.web_app.settings["base_url"]
    root = os.path.realpath(os.path.expanduser(serverapp.root_dir))
    renderer = Renderer()  # the extension's own threads for rendering notebooks
    serverapp.web_app.add_handlers(".*$", [
        (url_path_join(base_url, ROUTE, "(.*)"), RunFilesHandler, {"path": root, "renderer": renderer}),
        (url_path_join(base_url, OPEN_ROUTE, "(.*)"), OpenHandler, {"path": root, "renderer": renderer})])
    server = FileServer(url_path_join(base_url, ROUTE) + "/", root)
    os.environ.update(server.environment(os.getpid()))  # the server's kernels inherit its environment
    serverapp.log.info("kale-magic: run files are served at %s", server.url)

