"""Where a Jupyter server with kale-magic's extension serves run files, as a kernel learns it.

The extension puts its address in the server's environment, which the server's
kernels inherit, together with the server's process id: a kernel whose parent is
that very server (``JPY_PARENT_PID``) can link to it.  Kernels started otherwise —
terminal IPython, nbconvert or a script run from a Jupyter terminal — and VS Code
(which opens relative links itself, from the notebook's folder) keep relative links,
and so do kernels on Windows, where ``JPY_PARENT_PID`` holds a handle, not a pid.
Nothing here imports the server.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from ..layout import KALE_DIR

ENV = "KALE_MAGIC_FILE_SERVER"
ROUTE = "kale-magic/files"  # below the server's base URL
OPEN_ROUTE = "kale-magic/open"  # a run's notebook, copied where JupyterLab can open it


@dataclass(frozen=True)
class FileServer:
    url: str  # the handler's URL path, base URL included, ending in '/'
    root: Path  # the server's root directory

    def href(self, target: str | os.PathLike) -> str | None:
        """The URL of a file under some ``.kale/`` folder of the server's root; None for anything else."""
        try:
            rel = Path(target).resolve().relative_to(self.root)
        except (OSError, ValueError):
            return None
        return self.url + quote(rel.as_posix(), safe="/") if KALE_DIR in rel.parts else None

    def environment(self, pid: int) -> dict[str, str]:
        """What the extension exports to the kernels of server process ``pid``."""
        return {ENV: json.dumps({"url": self.url, "root": str(self.root), "pid": pid})}

    @classmethod
    def for_kernel(cls, environ=os.environ, namespace: dict | None = None) -> FileServer | None:
        """The server this kernel may link to, if it was started by one that serves run files."""
        if namespace and "__vsc_ipynb_file__" in namespace:
            return None
        try:
            data = json.loads(environ.get(ENV, ""))
        except ValueError:
            return None
        if str(data.get("pid")) != environ.get("JPY_PARENT_PID"):
            return None
        return cls(data["url"], Path(data["root"]).resolve())
