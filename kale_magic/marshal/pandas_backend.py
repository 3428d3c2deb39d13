"""pandas: DataFrame, Series and Index through Apache Arrow / Parquet, exactly or not at all.

Parquet cannot hold everything pandas can (object columns of arbitrary Python
values, second-resolution datetimes, duplicate column names, ...).  Rather
than trusting a list of rules, the backend round-trips the first row through
the very same Arrow/Parquet path (a few milliseconds) and compares types,
dtypes, labels and names; if anything differs, or a column holds Python
objects whose values Arrow would convert, the value is pickled instead (which
pandas supports exactly).  A dtype is never changed silently.
"""

from __future__ import annotations

import io
import json

from . import hashing
from .base import Backend, MissingLibrary, library
from .pickling import dump_exact, load_exact

PARQUET_FILE = "frame.parquet"
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
        # a frame needs a column to keep its rows; a bool column costs a bit per row once compressed
        frame = pd.DataFrame({SERIES_COLUMN: library("numpy").zeros(len(obj), dtype=bool)}, index=obj)
        meta = {"kind": "Index"}
    # Parquet keeps the labels, not an index's frequency nor that column labels were a range
    meta["freq"] = getattr(frame.index, "freqstr", None)
    columns = frame.columns
    if type(columns).__name__ == "RangeIndex":
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


def _check_exact(pd, pa, pq, frame, meta):
    """Raise _Inexact unless Arrow/Parquet gives this frame back with identical structure."""
    if not frame.columns.is_unique:
        raise _Inexact("duplicate column names")
    for labels in (frame.index, frame.columns):
        if any(level.dtype == object for level in getattr(labels, "levels", [labels])):
            raise _Inexact("labels holding Python objects")
    if any(dtype == object for dtype in frame.dtypes):
        raise _Inexact("columns holding Python objects")
    head = frame.iloc[:1]
    buffer = io.BytesIO()
    try:
        pq.write_table(pa.Table.from_pandas(head), buffer)
        probe = _restore_labels(pd, pq.read_table(io.BytesIO(buffer.getvalue())).to_pandas(), meta)
    except (pa.ArrowException, ValueError, TypeError) as exc:
        raise _Inexact(str(exc)) from exc
    if _signature(probe) != _signature(head):
        raise _Inexact("Arrow/Parquet would change a dtype or label")


def _read_verified(directory, record, filename) -> bytearray:
    """The whole file, hashed as it is read: one pass over the disk instead of a check pass plus a read."""
    data = bytearray(record["files"][filename]["size"])
    with hashing.open_verified(directory, record, filename) as f:
        f.readexactly_into(data)
        f.finish()
    return data


class PandasBackend(Backend):
    """pandas DataFrame, Series and Index: Parquet when exact, pickle otherwise."""

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
            pq = self.require("pyarrow.parquet")
            frame, meta = _as_frame(pd, obj)
            _check_exact(pd, pa, pq, frame, meta)
        except (_Inexact, MissingLibrary):
            return [dump_exact(obj, directory, PICKLE_STEM)]
        try:
            table = pa.Table.from_pandas(frame)
            table = table.replace_schema_metadata({**table.schema.metadata, META_KEY: json.dumps(meta).encode()})
            with hashing.create(directory / PARQUET_FILE) as f:  # hashed on the way out, not re-read
                pq.write_table(table, f)
        except (pa.ArrowException, ValueError, TypeError):  # a value beyond the first row Arrow cannot hold
            (directory / PARQUET_FILE).unlink(missing_ok=True)
            return [dump_exact(obj, directory, PICKLE_STEM)]
        return [PARQUET_FILE]

    def load(self, directory, record):
        pd = self.require("pandas")
        if PARQUET_FILE not in record["files"]:
            return load_exact(directory, record, PICKLE_STEM)
        pa = self.require("pyarrow")
        pq = self.require("pyarrow.parquet")
        table = pq.read_table(pa.BufferReader(_read_verified(directory, record, PARQUET_FILE)))
        meta = json.loads(table.schema.metadata[META_KEY])
        return _from_frame(_restore_labels(pd, table.to_pandas(), meta), meta)
