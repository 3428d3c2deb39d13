"""The content-addressed object store: ``objects/<sha256[:2]>/<sha256>``, one file per content.

Objects are written to a temporary name, hashed *after* copying (so the name
always matches the stored bytes even if the source changes meanwhile), then
renamed into place read-only with a fixed "seal" modification time.  Any later
write to an object (possible through a hard link, e.g. by root) changes its
mtime, so a damaged object is noticed by a cheap ``stat`` and never reused.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from pathlib import Path

from ..files import sha256_file
from .errors import disk_full

try:
    import fcntl
except ImportError:  # Windows: no reflinks
    fcntl = None

_CHUNK = 1 << 20
SEAL_MTIME_NS = 946_684_800 * 10**9  # 2000-01-01T00:00:00Z
_FICLONE = 0x40049409  # Linux ioctl: share extents (reflink) on btrfs, XFS, ...


class ObjectStore:
    """Read-only content files shared by all snapshots of one store."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._tmp = self.root / "tmp"

    def path(self, digest: str) -> Path:
        return self.root / digest[:2] / digest

    def has(self, digest: str, size: int) -> bool:
        """True when the object exists intact (right size, seal untouched)."""
        try:
            info = os.stat(self.path(digest))
        except FileNotFoundError:
            return False
        return info.st_size == size and info.st_mtime_ns == SEAL_MTIME_NS

    def ingest(self, source: Path) -> tuple[str, int, bool]:
        """Copy ``source`` in; return ``(sha256, size, whether the content was new)``.

        Read errors stay ``OSError`` (the caller names the workspace file)."""
        tmp = None
        try:
            self._tmp.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=self._tmp, prefix="in-")
            tmp = Path(name)
            with open(source, "rb") as src, os.fdopen(fd, "wb") as dst:
                _clone_or_copy(src, dst)
            digest = sha256_file(tmp)
            size = tmp.stat().st_size
            added = self._commit(tmp, digest, size)
        except OSError as error:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
            if error.errno == errno.ENOSPC:
                raise disk_full(self.root, error) from None
            raise
        return digest, size, added

    def _commit(self, tmp: Path, digest: str, size: int) -> bool:
        """Move ``tmp`` into place unless an intact copy is there; first writer wins."""
        if self.has(digest, size):
            tmp.unlink()
            return False
        os.chmod(tmp, 0o444)
        os.utime(tmp, ns=(SEAL_MTIME_NS, SEAL_MTIME_NS))
        target = self.path(digest)
        target.parent.mkdir(exist_ok=True)
        try:
            os.link(tmp, target)
        except FileExistsError:
            if self.has(digest, size):  # a concurrent snapshot stored the same content
                tmp.unlink()
                return False
            os.replace(tmp, target)  # a damaged object: replace it
            return True
        tmp.unlink()
        return True

    def link(self, digest: str, dest: Path, mode: int) -> None:
        """Place the object at ``dest`` read-only: a hard link, or a copy when that fails
        (other file system) or when the file is executable (the shared object is not)."""
        source = self.path(digest)
        if not mode & 0o111:
            try:
                os.link(source, dest)
                return
            except OSError as error:
                if error.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                    raise
        self.copy(digest, dest, mode & ~0o222)

    def copy(self, digest: str, dest: Path, mode: int) -> None:
        """A private copy of the object at ``dest`` with ``mode``."""
        with open(self.path(digest), "rb") as src, open(dest, "wb") as dst:
            _clone_or_copy(src, dst)
        os.chmod(dest, stat.S_IMODE(mode))


def _clone_or_copy(src, dst) -> None:
    """Reflink when the file system can (instant, copy-on-write), else an in-kernel copy,
    else a plain read/write loop."""
    if fcntl is not None:
        try:
            fcntl.ioctl(dst.fileno(), _FICLONE, src.fileno())
            return
        except OSError:
            pass
    try:
        while os.copy_file_range(src.fileno(), dst.fileno(), 1 << 30):
            pass
        return
    except AttributeError:
        pass
    except OSError as error:
        if error.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise
    src.seek(0)
    dst.seek(0)
    dst.truncate()
    shutil.copyfileobj(src, dst, _CHUNK)
