"""Saving and loading one value as a self-describing directory.

Layout of a saved value::

    <path>/            written as a hidden temp sibling, fsynced (unless durable=False), renamed into place
      kale.json        the record: backend, versions, type, sizes, checksums, artifact type
      <data files>     whatever the backend wrote

A reader either sees the previous complete directory, nothing, or the new
complete one: never a half-written value.  ``load`` trusts only the record
(never a file extension) and checks every file's size and checksum.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from pathlib import Path

from ..errors import MarshalError, MissingDependency
from ..files import human_size, is_disk_full
from . import hashing
from .base import BackendDeclined, MissingLibrary, type_name
from .unmarshallable import check_marshallable

RECORD_FILE = "kale.json"
FORMAT = 1


def _subject(name, step):
    if name and step:
        return f"'{name}' from step '{step}'"
    return f"'{name}'" if name else "the saved value"


def _fix(step):
    return f"run step '{step}' again to save it" if step else "save it again"


def describe(registry, obj):
    check_marshallable(obj)
    backend = registry.backend_for(obj)
    return backend.name, type_name(obj), backend.artifact_type, backend.size(obj)


def save(registry, obj, path, name=None, durable=True, prefer=None) -> dict:
    check_marshallable(obj)
    path = Path(path)
    temp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        record = _write(registry, obj, temp, name, durable, prefer)
        if durable:
            _sync_tree(temp)
        _publish(temp, path)
    except BaseException as exc:
        written = _tree_size(temp) if temp is not None and is_disk_full(exc) else 0
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
        if is_disk_full(exc):
            raise _disk_full(registry, obj, path, name, written) from None
        raise
    if durable:
        _fsync(path.parent)
    return record


def _disk_full(registry, obj, path: Path, name, written: int) -> MarshalError:
    """The disk filled while saving: say so, with what the value needs and what is free."""
    try:
        needed = registry.backend_for(obj).size(obj)
    except Exception:  # sizing is a courtesy here; the value may be what broke
        needed = None
    need = (f"the value needs about {human_size(needed)}" if needed else
            f"the value needs more than the {human_size(written)} written before it filled")
    try:
        free = f"; {human_size(shutil.disk_usage(path.parent).free)} is free"
    except OSError:
        free = ""
    return MarshalError(f"Could not save {_subject(name, None)}: the disk holding {path.parent} is full "
                        f"({need}{free}); free some space there and run the step again")


def _tree_size(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def _write(registry, obj, directory: Path, name, durable: bool, prefer: str | None = None) -> dict:
    declined = []
    candidates = registry.candidates(obj)
    candidates.sort(key=lambda backend: backend.name != prefer)  # stable: the rest keep their order
    for backend in candidates:
        try:
            with hashing.recording(durable) as written:
                backend.save(obj, directory)
        except BackendDeclined as exc:
            declined.append(f"{backend.name}: {exc}")
            _empty(directory)
            continue
        except MissingLibrary as exc:
            raise MissingDependency(exc.package, f"Saving {_subject(name, None)} with the "
                                                 f"'{backend.name}' marshal backend") from exc
        except Exception as exc:
            if is_disk_full(exc):
                raise
            raise MarshalError(f"Could not save {_subject(name, None)} of type {type_name(obj)} with the "
                               f"'{backend.name}' marshal backend ({type(exc).__name__}: {exc}); "
                               f"make it a type that can be pickled or pass what it is built from "
                               f"instead") from exc
        return _finish(backend, obj, directory, written)
    raise MarshalError(f"No marshal backend could save {_subject(name, None)} of type {type_name(obj)} "
                       f"({'; '.join(declined)})")


def _finish(backend, obj, directory: Path, written: dict) -> dict:
    files = {}
    for file in sorted(p for p in directory.rglob("*") if p.is_file()):
        size, digest = written.get(os.path.abspath(file), (None, None))
        if size != file.stat().st_size:  # not written through hashing.create (or changed after)
            size, digest = hashing.file_digest(file)
        files[file.relative_to(directory).as_posix()] = {"size": size, "checksum": f"{hashing.ALGORITHM}:{digest}"}
    from ..version import __version__

    record = {
        "format": FORMAT,
        "backend": backend.name,
        "backend_version": str(backend.version),
        "type": type_name(obj),
        "artifact_type": backend.artifact_type,
        "size": sum(entry["size"] for entry in files.values()),
        "checksum": f"{hashing.ALGORITHM}:{_combined(files)}",
        "files": files,
        "kale_magic_version": __version__,
    }
    with open(directory / RECORD_FILE, "w") as f:
        json.dump(record, f, indent=1, sort_keys=True)
    return record


def _combined(files: dict) -> str:
    """One digest over every file's name, size and digest: the value's identity."""
    import xxhash

    text = "\n".join(f"{name} {entry['size']} {entry['checksum']}" for name, entry in sorted(files.items()))
    return xxhash.xxh3_128(text.encode()).hexdigest()


def _empty(directory: Path):
    for child in directory.iterdir():
        shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()


def _sync_tree(directory: Path):
    """Put every file, then the directory itself, on disk before the rename publishes them."""
    for file in directory.rglob("*"):
        _fsync(file)
    _fsync(directory)


def _fsync(path: Path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(temp: Path, path: Path):
    """Move the finished directory into place; an old value is swapped out, never overwritten in place."""
    try:
        os.rename(temp, path)
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
            raise
        old = temp.with_name(temp.name + ".old")
        os.rename(path, old)
        os.rename(temp, path)
        shutil.rmtree(old) if old.is_dir() else old.unlink()


def load(registry, path, name=None, step=None):
    path = Path(path)
    record = _read_record(path, name, step)
    subject = _subject(name, step)
    if record["backend"] not in registry:
        raise MarshalError(f"Value {subject} was saved with the '{record['backend']}' marshal backend, which "
                           f"is not installed here (known: {', '.join(registry.names())}); install the "
                           f"package that provides it in this step's environment")
    backend = registry.get(record["backend"])
    try:
        _check_files(path, record, verify_content=not backend.verifies_while_reading)
        return _load_checked(backend, path, record)
    except hashing.ChecksumMismatch as exc:
        raise MarshalError(f"Value {subject} is corrupted ({exc.filename} in {path}: {exc.reason}); "
                           f"{_fix(step)}") from None
    except MissingLibrary as exc:
        raise MissingDependency(exc.package, f"Loading {subject} (saved with the "
                                             f"'{backend.name}' marshal backend)") from exc
    except ModuleNotFoundError as exc:
        package = (exc.name or "").split(".")[0]
        if not package:
            raise
        raise MissingDependency(backend.packages.get(package, package),
                                f"Loading {subject} (saved with the '{backend.name}' marshal backend)") from exc


def _load_checked(backend, path, record):
    """Load; a backend that fails mid-stream on altered bytes is reported as corruption, not as its own bug."""
    try:
        return backend.load(path, record)
    except (hashing.ChecksumMismatch, MissingLibrary, ModuleNotFoundError):
        raise
    except Exception:
        if backend.verifies_while_reading:
            _check_files(path, record, verify_content=True)
        raise


def _read_record(path: Path, name, step) -> dict:
    subject = _subject(name, step)
    try:
        with open(path / RECORD_FILE) as f:
            record = json.load(f)
    except FileNotFoundError:
        where = f"{path} has no {RECORD_FILE}" if path.is_dir() else f"nothing at {path}"
        raise MarshalError(f"Value {subject} is missing ({where}); {_fix(step)}") from None
    except (ValueError, OSError) as exc:
        raise MarshalError(f"Value {subject} has an unreadable record {path / RECORD_FILE} ({exc}); "
                           f"{_fix(step)}") from None
    if not isinstance(record, dict) or not {"backend", "files", "type"} <= record.keys():
        raise MarshalError(f"Value {subject} has an invalid record {path / RECORD_FILE}; {_fix(step)}")
    return record


def _check_files(path: Path, record: dict, verify_content: bool):
    for filename, entry in record["files"].items():
        file = path / filename
        try:
            size = file.stat().st_size
        except FileNotFoundError:
            raise hashing.ChecksumMismatch(filename, "the file is missing") from None
        if size != entry["size"]:
            raise hashing.wrong_size(filename, size, entry["size"])
        if verify_content and hashing.file_digest(file) != (entry["size"], hashing.digest_of(entry)):
            raise hashing.ChecksumMismatch(filename, "its content does not match the checksum saved with it")
