"""pandas: DataFrame, Series and Index as Apache Arrow IPC files, exactly or not at all.

Arrow's IPC file format (Feather v2), uncompressed, rather than Parquet: the
same Arrow types and pandas metadata, but written and read at memory speed and
memory-mapped on load (a 10M-row frame: ~0.5 s round trip against ~5 s for
Parquet and ~1 s for pickle), at the price of larger files.  Any Arrow reader
(pyarrow, polars, DuckDB, R) opens it.

Arrow cannot hold everything pandas can (object columns of arbitrary Python
values, duplicate column names, ...).  Rather than trusting a list of rules,
the backend round-trips the first row through the very same Arrow path (a
millisecond) and compares types, dtypes, labels and names; if anything
differs, or a column holds Python objects whose values Arrow would convert,
the value is pickled instead (which pandas supports exactly).  A dtype is never
changed silently.
"""

from __future__ import annotations

import json

from . import hashing
from .base import Backend, MissingLibrary, library
from .pickling import dump_exact, load_exact

ARROW_FILE = "frame.arrow"
PICKLE_STEM = "frame"
SERIES_COLUMN = "__kale_series__"
META_KEY = b"kale_magic"


class _Inexact(Exception):
    pass


def _as_frame(pd, obj):
    """(DataFrame, meta) carrying ``obj``: Series and Index become a frame plus how to get them back."""
    if isinstance(obj, pd.DataFrame):
        frame, meta = obj, {"kind": "DataFrame"}
    elif isinstance(obj, pd.Series):
        if obj.name is not None and type(obj.name) not in (str, int, float, bool):
            raise _Inexact("series name")
        frame, meta = obj.to_frame(SERIES_COLUMN), {"kind": "Series", "name": obj.name}
    else:
        # a frame needs a column to keep its rows; an Arrow bool column costs one bit per row
        frame = pd.DataFrame({SERIES_COLUMN: library("numpy").zeros(len(obj), dtype=bool)}, index=obj)
        meta = {"kind": "Index"}
    # Arrow keeps the labels, not an index's frequency nor that column labels were a range
    meta["freq"] = getattr(frame.index, "freqstr", None)
    columns = frame.columns
    if isinstance(columns, pd.RangeIndex):
        if columns.name is not None and type(columns.name) not in (str, int, float, bool):
            raise _Inexact("column index name")
        meta["columns_range"] = [columns.start, columns.stop, columns.step, columns.name]
    return frame, meta


def _restore_labels(pd, frame, meta):
    if meta.get("freq"):
        frame.index = type(frame.index)(frame.index, freq=meta["freq"])
    if meta.get("columns_range"):
        start, stop, step, name = meta["columns_range"]
        frame.columns = pd.RangeIndex(start, stop, step, name=name)
    return frame


def _from_frame(frame, meta):
    if meta["kind"] == "Series":
        return frame[SERIES_COLUMN].rename(meta["name"])
    if meta["kind"] == "Index":
        return frame.index
    return frame


def _labels_signature(index):
    """Everything about an Index that must survive: class, dtypes, names, frequency."""
    levels = getattr(index, "levels", [index])
    return (type(index), tuple(level.dtype for level in levels), tuple(str(level.dtype) for level in levels),
            tuple(index.names), getattr(index, "freqstr", None))


def _dtype_signature(dtype):
    categories = getattr(dtype, "categories", None)
    return (type(dtype), str(dtype), dtype,
            None if categories is None else (tuple(categories), categories.dtype, dtype.ordered))


def _signature(frame):
    return (
        type(frame),
        _labels_signature(frame.index),
        _labels_signature(frame.columns),
        tuple(frame.columns),
        tuple(_dtype_signature(dtype) for dtype in frame.dtypes),
        frame.attrs,
    )


def _check_exact(pd, pa, frame, meta):
    """Raise _Inexact unless Arrow gives this frame back with identical structure."""
    if not frame.columns.is_unique:
        raise _Inexact("duplicate column names")
    for labels in (frame.index, frame.columns):
        if any(level.dtype == object for level in getattr(labels, "levels", [labels])):
            raise _Inexact("labels holding Python objects")
    if any(dtype == object for dtype in frame.dtypes):
        raise _Inexact("columns holding Python objects")
    try:
        json.dumps(frame.attrs)  # pyarrow stores attrs as JSON (and only warns when it cannot)
    except (TypeError, ValueError) as exc:
        raise _Inexact("attrs that are not JSON") from exc
    head = frame.iloc[:1]
    try:
        sink = pa.BufferOutputStream()
        _write_ipc(pa, pa.Table.from_pandas(head, nthreads=1), sink)
        probe = _restore_labels(pd, pa.ipc.open_file(sink.getvalue()).read_all().to_pandas(), meta)
        same = _signature(probe) == _signature(head)
    except (pa.ArrowException, ValueError, TypeError) as exc:  # includes attrs that cannot be compared
        raise _Inexact(str(exc)) from exc
    if not same:
        raise _Inexact("Arrow would change a dtype or label")


def _write_ipc(pa, table, sink):
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


def _read_verified_ipc(pa, directory, record, filename):
    """Memory-map the file, hash the mapping (one pass over the page cache), then decode it in place.

    Numeric columns are copied into pandas' blocks; Arrow-backed columns (str,
    ``[pyarrow]`` dtypes) keep pointing into the mapping, which stays valid
    because saved values are only ever replaced by renaming, never rewritten.
    """
    entry = record["files"][filename]
    with pa.memory_map(str(directory / filename)) as source:
        buffer = source.read_buffer()
    hashing.verify_buffer(buffer, entry, filename)
    return pa.ipc.open_file(buffer).read_all()


class PandasBackend(Backend):
    """pandas DataFrame, Series and Index: Arrow IPC when exact, pickle otherwise."""

    name = "pandas"
    artifact_type = "Dataset"
    priority = 100
    packages = {"pandas": "pandas", "pyarrow": "pyarrow"}
    verifies_while_reading = True

    def handles(self, obj):
        pd = library("pandas")
        if pd is None:
            return False
        if type(obj) in (pd.DataFrame, pd.Series):
            return True
        return isinstance(obj, pd.Index) and type(obj).__module__.partition(".")[0] == "pandas"

    def size(self, obj):
        """Shallow bytes (object columns count their pointers): O(blocks), not O(columns) like memory_usage."""
        pd = library("pandas")
        if isinstance(obj, pd.MultiIndex):  # would have to build its codes to answer
            return None
        if isinstance(obj, pd.Index):
            return int(obj.nbytes)
        index_size = self.size(obj.index)
        if index_size is None:
            return None
        if isinstance(obj, pd.Series):
            return int(obj.array.nbytes + index_size)
        blocks = getattr(getattr(obj, "_mgr", None), "blocks", None)
        return None if blocks is None else int(sum(block.values.nbytes for block in blocks) + index_size)

    def save(self, obj, directory):
        pd = self.require("pandas")
        try:
            pa = self.require("pyarrow")
            frame, meta = _as_frame(pd, obj)
            _check_exact(pd, pa, frame, meta)
        except (_Inexact, MissingLibrary):
            return [dump_exact(obj, directory, PICKLE_STEM)]
        try:
            table = pa.Table.from_pandas(frame)
            table = table.replace_schema_metadata({**table.schema.metadata, META_KEY: json.dumps(meta).encode()})
            with hashing.create(directory / ARROW_FILE) as f:  # hashed on the way out, not re-read
                _write_ipc(pa, table, f)
        except (pa.ArrowException, ValueError, TypeError):  # a value beyond the first row Arrow cannot hold
            (directory / ARROW_FILE).unlink(missing_ok=True)
            return [dump_exact(obj, directory, PICKLE_STEM)]
        return [ARROW_FILE]

    def load(self, directory, record):
        pd = self.require("pandas")
        if ARROW_FILE not in record["files"]:
            return load_exact(directory, record, PICKLE_STEM)
        table = _read_verified_ipc(self.require("pyarrow"), directory, record, ARROW_FILE)
        meta = json.loads(table.schema.metadata[META_KEY])
        return _from_frame(_restore_labels(pd, table.to_pandas(), meta), meta)
