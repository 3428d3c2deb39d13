"""Checksums computed while bytes stream to or from disk.

Hashing in a separate pass would read every saved gigabyte twice; instead
backends write through :func:`create` and read through :func:`open_verified`,
which hash each chunk as it passes, or map a file with :func:`map_verified`,
which hashes the mapping once before anything else reads it.  Files a backend
writes by other means (e.g. a library that only accepts a path) are hashed
after the fact.  xxh3-128 runs at memory speed (~30 ms per GiB), far below disk
cost.

A durable save must reach the disk before it is published.  Rather than write
everything and then wait for one long ``fsync``, the writer asks the kernel to
start writing each chunk back as soon as it is written (Linux
``sync_file_range``), so the disk works while the value is still being
serialized and the final ``fsync`` finds little left to do.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import mmap
import os

from ..files import CONTENT_HASH, file_digest  # noqa: F401 (file_digest: for files not read through a backend)

ALGORITHM = CONTENT_HASH
# Bytes per write/read: small enough that hashing a chunk finds it still in the CPU cache (L3) right
# after the copy to/from the kernel, large enough that the Python loop costs nothing.
CHUNK = 4 << 20
# A durable save starts the disk write-back of what it has written every this many bytes.
WRITEBACK_STEP = 16 << 20
_SYNC_FILE_RANGE_WRITE = 2  # start write-out of dirty pages, do not wait for it


class _Recording:
    """What the current save has written through :func:`create`, and whether it must reach the disk."""

    def __init__(self, durable: bool):
        self.files: dict[str, tuple[int, str]] = {}  # absolute filename -> (size, digest)
        self.durable = durable


_recording: contextvars.ContextVar[_Recording | None] = contextvars.ContextVar("kale_marshal_recording",
                                                                              default=None)


class ChecksumMismatch(Exception):
    """A file's content differs from its record; the framework names the variable and step."""

    def __init__(self, filename: str, reason: str):
        super().__init__(f"{filename}: {reason}")
        self.filename = filename
        self.reason = reason


def wrong_size(filename: str, size: int, expected: int) -> ChecksumMismatch:
    return ChecksumMismatch(filename, f"{size} bytes instead of {expected}, the file is truncated or was changed")


def _hasher():
    import xxhash

    return xxhash.xxh3_128()


def _nbytes(data) -> int:
    return data.nbytes if isinstance(data, memoryview) else memoryview(data).nbytes


@contextlib.contextmanager
def recording(durable: bool = False):
    """Collect the digests of files written through :func:`create` during one save.

    With ``durable`` the files' write-back to disk starts while they are written.
    """
    current = _Recording(durable)
    token = _recording.set(current)
    try:
        yield current.files
    finally:
        _recording.reset(token)


@functools.cache
def _sync_file_range():
    """libc's ``sync_file_range`` (Linux only; the os module does not offer it), or None."""
    import ctypes

    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    return function


class HashingWriter:
    """A write-only, non-seekable binary file that hashes what it writes."""

    def __init__(self, path):
        self.path = os.path.abspath(path)
        self._file = open(self.path, "wb")
        self._hash = _hasher()
        self.size = 0
        current = _recording.get()
        self._writeback = _sync_file_range() if current is not None and current.durable else None
        self._submitted = 0  # bytes whose write-back has been started

    def write(self, data) -> int:
        self._hash.update(data)
        self.size += _nbytes(data)
        written = self._file.write(data)
        if self._writeback is not None and self.size - self._submitted >= WRITEBACK_STEP:
            self._file.flush()
            self._writeback(self._file.fileno(), self._submitted, 0, _SYNC_FILE_RANGE_WRITE)  # 0: to the end
            self._submitted = self.size
        return written

    def flush(self):
        self._file.flush()

    def writable(self):
        return True

    def seekable(self):
        return False

    def tell(self):
        return self.size  # append-only from offset 0 (joblib aligns arrays with it)

    @property
    def closed(self):
        return self._file.closed

    def close(self):
        if self._file.closed:
            return
        self._file.close()
        current = _recording.get()
        if current is not None:
            current.files[self.path] = (self.size, self._hash.hexdigest())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def create(path) -> HashingWriter:
    """Open ``path`` for writing so that its checksum is known when it is closed."""
    return HashingWriter(path)


class VerifyingReader:
    """A read-only file that hashes what is read; :meth:`finish` checks the whole file."""

    def __init__(self, path, size: int, checksum: str):
        self.name = os.path.basename(path)
        self._file = open(path, "rb")
        self._hash = _hasher()
        self._expected = (size, checksum)
        self.size = 0

    def _seen(self, data):
        self._hash.update(data)
        self.size += _nbytes(data)
        return data

    def read(self, n=-1):
        return self._seen(self._file.read(n))

    def readline(self, limit=-1):
        return self._seen(self._file.readline(limit))

    def readinto(self, buffer):
        view = memoryview(buffer).cast("B")
        count = self._file.readinto(view)
        self._seen(view[:count])
        return count

    def readexactly_into(self, buffer):
        """Fill ``buffer`` completely, or raise when the file ends first."""
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view):
            count = self.readinto(view[done:])
            if not count:
                raise ChecksumMismatch(self.name, "the file ends early")
            done += count

    def readable(self):
        return True

    def seekable(self):
        return False

    def finish(self):
        """Hash what is left unread and compare with the record."""
        while self.read(CHUNK):
            pass
        if (self.size, self._hash.hexdigest()) != self._expected:
            raise ChecksumMismatch(self.name, "its content does not match the checksum saved with it")

    def close(self):
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_verified(directory, record: dict, filename: str) -> VerifyingReader:
    """Open a recorded file for a single streaming read that is checked by ``finish()``."""
    entry = record["files"][filename]
    return VerifyingReader(os.path.join(directory, filename), entry["size"], digest_of(entry))


def map_verified(directory, record: dict, filename: str) -> mmap.mmap:
    """A copy-on-write mapping of a recorded file, checked against its record before it is returned.

    Writes to the mapping stay in this process (the file and every other
    reader keep the saved bytes).  Checking hashes the mapping once: it reads
    the page cache in place (no copy) and leaves the pages mapped, so the
    caller's own reads cost nothing more.  The mapping must never be closed
    while anything points into it; it is unmapped when the last reference goes.
    """
    entry = record["files"][filename]
    with open(os.path.join(directory, filename), "rb") as f:
        try:
            mapping = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        except ValueError:  # an empty file cannot be mapped
            raise ChecksumMismatch(filename, "the file is empty") from None
    verify_buffer(mapping, entry, filename)
    return mapping


def digest_of(entry: dict) -> str:
    algorithm, _, digest = entry["checksum"].partition(":")
    if algorithm != ALGORITHM:
        raise ChecksumMismatch("kale.json", f"unknown checksum algorithm '{algorithm}'")
    return digest


def verify_buffer(buffer, entry: dict, filename: str) -> None:
    """Check an in-memory (or memory-mapped) copy of a recorded file."""
    size = memoryview(buffer).nbytes
    if size != entry["size"]:
        raise wrong_size(filename, size, entry["size"])
    if _hasher_of(buffer) != digest_of(entry):
        raise ChecksumMismatch(filename, "its content does not match the checksum saved with it")


def _hasher_of(buffer) -> str:
    hasher = _hasher()
    hasher.update(buffer)
    return hasher.hexdigest()

