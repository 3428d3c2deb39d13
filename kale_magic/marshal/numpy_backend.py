"""numpy: arrays as standard ``.npy`` files, scalars as 0-d ``.npy``, other numpy objects pickled.

The ``.npy`` is written by hand (the header via ``numpy.lib.format``, the data
straight from the array's memory, chunk by chunk) so each byte is written once
and hashed on the same pass.  The file stays a plain ``.npy``:
``np.load(path, mmap_mode="r")`` works on it.

Loading a large array copies nothing: the file is mapped copy-on-write and the
array is a plain ``np.ndarray`` over the mapping (not an ``np.memmap``, so code
checking exact types sees what the producer had).  A consumer pays for the
pages it touches; one that writes gets private copies of those pages only, so
the saved file, and what any other step loads from it, never change.  Before
the array is returned the whole mapping is hashed against the record (~30 ms
per GiB from the page cache), so a truncated or altered file is refused before
user code sees a value.  Small arrays are simply read: below
``MAP_FROM_BYTES`` a mapping (a file descriptor, page faults) costs more than
the copy.
"""

from __future__ import annotations

import ast
import pickle
import struct
import warnings

from . import hashing
from .base import Backend, library

ARRAY_FILE = "array.npy"
SCALAR_FILE = "scalar.npy"
OBJECT_FILE = "object.pkl"
_MAX_HEADER = 1 << 24
MAP_FROM_BYTES = 1 << 20


def _numpy_objects(np):
    random = np.random
    return (random.Generator, random.RandomState, random.BitGenerator, random.SeedSequence, np.dtype)


def _flat_bytes(np, arr):
    """The array's memory as a flat uint8 view, or None when it is not contiguous."""
    if arr.flags.c_contiguous:
        flat = arr.reshape(-1)
    elif arr.flags.f_contiguous:
        flat = arr.T.reshape(-1)
    else:
        return None
    return flat.view(np.uint8) if arr.dtype.itemsize else np.empty(0, np.uint8)


def write_npy(np, path, arr):
    """Write ``arr`` as ``.npy`` through a hashing writer, without copying contiguous data."""
    fmt = np.lib.format
    flat = _flat_bytes(np, arr)
    header = fmt.header_data_from_array_1_0(arr)
    with hashing.create(path) as f:
        if flat is None or not _latin1(header["descr"]):
            # numpy's own writer: copies 16 MiB chunks of a strided array; picks format 3.0 for
            # non-latin-1 field names
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "format 3.0 needs numpy >= 1.17"
                fmt.write_array(f, arr, allow_pickle=False)
            return
        try:
            fmt.write_array_header_1_0(f, header)
        except ValueError:  # header longer than 64 KiB (very wide structured dtypes)
            fmt.write_array_header_2_0(f, header)
        for start in range(0, flat.size, hashing.CHUNK):
            f.write(flat[start:start + hashing.CHUNK])


def _latin1(descr) -> bool:
    try:
        repr(descr).encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def _read_header(np, f):
    """(shape, fortran_order, dtype), leaving ``f`` at the data."""
    fmt = np.lib.format
    version = fmt.read_magic(f)
    if version == (1, 0):
        return fmt.read_array_header_1_0(f, max_header_size=_MAX_HEADER)
    if version == (2, 0):
        return fmt.read_array_header_2_0(f, max_header_size=_MAX_HEADER)
    if version != (3, 0):
        raise ValueError(f".npy format {version} is not one this backend writes")
    # 3.0 is 2.0 with utf-8 field names, and numpy has no public reader for its header
    (length,) = struct.unpack("<I", f.read(4))
    header = ast.literal_eval(f.read(length).decode("utf-8"))
    return tuple(header["shape"]), header["fortran_order"], fmt.descr_to_dtype(header["descr"])


def read_npy(np, directory, record, filename):
    """The array saved by :func:`write_npy`: mapped when large, read into a fresh array when small."""
    if record["files"][filename]["size"] >= MAP_FROM_BYTES:
        return map_npy(np, directory, record, filename)
    with hashing.open_verified(directory, record, filename) as f:
        shape, fortran_order, dtype = _read_header(np, f)
        arr = np.empty(shape, dtype, order="F" if fortran_order else "C")
        flat = _flat_bytes(np, arr)
        for start in range(0, flat.size, hashing.CHUNK):
            f.readexactly_into(flat[start:start + hashing.CHUNK])
        f.finish()
    return arr


def map_npy(np, directory, record, filename):
    """A plain ndarray over a verified copy-on-write mapping of the file (see the module docstring)."""
    mapping = hashing.map_verified(directory, record, filename)
    shape, fortran_order, dtype = _read_header(np, mapping)  # an mmap reads like a file
    return np.ndarray(shape, dtype, buffer=mapping, offset=mapping.tell(), order="F" if fortran_order else "C")


class NumpyBackend(Backend):
    """ndarrays of non-object dtypes, numpy scalars, random generators and other numpy objects."""

    name = "numpy"
    artifact_type = "Dataset"
    priority = 100
    packages = {"numpy": "numpy"}
    verifies_while_reading = True

    def handles(self, obj):
        np = library("numpy")
        if np is None:
            return False
        if type(obj) is np.ndarray:
            return not obj.dtype.hasobject
        if isinstance(obj, np.generic):
            return not obj.dtype.hasobject
        return isinstance(obj, _numpy_objects(np))

    def size(self, obj):
        return getattr(obj, "nbytes", None)

    def save(self, obj, directory):
        np = self.require("numpy")
        if isinstance(obj, np.ndarray):
            write_npy(np, directory / ARRAY_FILE, obj)
            return [ARRAY_FILE]
        if isinstance(obj, np.generic):
            write_npy(np, directory / SCALAR_FILE, np.asarray(obj))
            return [SCALAR_FILE]
        with hashing.create(directory / OBJECT_FILE) as f:
            pickle.dump(obj, f, protocol=5)
        return [OBJECT_FILE]

    def load(self, directory, record):
        np = self.require("numpy")
        files = record["files"]
        if ARRAY_FILE in files:
            return read_npy(np, directory, record, ARRAY_FILE)
        if SCALAR_FILE in files:
            return read_npy(np, directory, record, SCALAR_FILE)[()]
        with hashing.open_verified(directory, record, OBJECT_FILE) as f:
            value = pickle.load(f)
            f.finish()
        return value
