"""Write a file so readers see the old content or the new one, never a half-written one."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from .errors import disk_full


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(name, path)
    except OSError as error:
        Path(name).unlink(missing_ok=True)
        if error.errno == errno.ENOSPC:
            raise disk_full(path.parent, error) from None
        raise
