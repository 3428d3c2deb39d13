"""Checksums computed while bytes stream to or from disk.

Hashing in a separate pass would read every saved gigabyte twice; instead
backends write through :func:`create` and read through :func:`open_verified`,
which hash each chunk as it passes.  Files a backend writes by other means
(e.g. a library that only accepts a path) are hashed after the fact.
xxh3-128 runs at memory speed (~30 ms per GiB), far below disk cost.
"""

from __future__ import annotations

import contextlib
import contextvars
import os

ALGORITHM = "xxh3_128"
# Bytes per write/read: small enough that hashing a chunk finds it still in the CPU cache (L3) right
# after the copy to/from the kernel, large enough that the Python loop costs nothing.
CHUNK = 4 << 20

# filename (absolute) -> (size, digest) of files written through `create` in the current save
_written: contextvars.ContextVar[dict | None] = contextvars.ContextVar("kale_marshal_written", default=None)


class ChecksumMismatch(Exception):
    """A file's content differs from its record; the framework names the variable and step."""

    def __init__(self, filename: str, reason: str):
        super().__init__(f"{filename}: {reason}")
        self.filename = filename
        self.reason = reason


def _hasher():
    import xxhash

    return xxhash.xxh3_128()


def _nbytes(data) -> int:
    return data.nbytes if isinstance(data, memoryview) else memoryview(data).nbytes


@contextlib.contextmanager
def recording():
    """Collect the digests of files written through :func:`create` during one save."""
    token = _written.set({})
    try:
        yield _written.get()
    finally:
        _written.reset(token)


class HashingWriter:
    """A write-only, non-seekable binary file that hashes what it writes."""

    def __init__(self, path):
        self.path = os.path.abspath(path)
        self._file = open(self.path, "wb")
        self._hash = _hasher()
        self.size = 0

    def write(self, data) -> int:
        self._hash.update(data)
        self.size += _nbytes(data)
        return self._file.write(data)

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
        table = _written.get()
        if table is not None:
            table[self.path] = (self.size, self._hash.hexdigest())

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


def digest_of(entry: dict) -> str:
    algorithm, _, digest = entry["checksum"].partition(":")
    if algorithm != ALGORITHM:
        raise ChecksumMismatch("kale.json", f"unknown checksum algorithm '{algorithm}'")
    return digest


def verify_buffer(buffer, entry: dict, filename: str) -> None:
    """Check an in-memory (or memory-mapped) copy of a recorded file."""
    if (memoryview(buffer).nbytes, _hasher_of(buffer)) != (entry["size"], digest_of(entry)):
        raise ChecksumMismatch(filename, "its content does not match the checksum saved with it")


def _hasher_of(buffer) -> str:
    hasher = _hasher()
    hasher.update(buffer)
    return hasher.hexdigest()


def file_digest(path) -> tuple[int, str]:
    """(size, digest) of a file, read in large chunks."""
    hasher = _hasher()
    size = 0
    buffer = bytearray(min(CHUNK, max(os.path.getsize(path), 1)))
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as f:
        while count := f.readinto(view):
            hasher.update(view[:count])
            size += count
    return size, hasher.hexdigest()
