"""pandas round trips: Arrow IPC when Arrow keeps everything, an exact pickle otherwise."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import pandas as pdst

from kale_magic import marshal
from kale_magic.errors import MarshalError

pd = pytest.importorskip("pandas")
pytest.importorskip("pyarrow")


def roundtrip(obj, tmp_path):
    record = marshal.save(obj, tmp_path / "v", name="v")
    return record, marshal.load(tmp_path / "v", name="v", step="s")


def assert_identical(a, b):
    assert type(b) is type(a)
    if isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(b, a, check_exact=True, check_freq=True, check_flags=True,
                                      check_index_type=True, check_column_type=True, check_categorical=True)
        assert list(b.dtypes) == list(a.dtypes)
    elif isinstance(a, pd.Series):
        pd.testing.assert_series_equal(b, a, check_exact=True, check_freq=True, check_index_type=True,
                                       check_categorical=True)
        assert b.name == a.name or (b.name != b.name and a.name != a.name)
    else:
        pd.testing.assert_index_equal(b, a, exact=True, check_exact=True, check_categorical=True)
        assert getattr(b, "freq", None) == getattr(a, "freq", None)
    assert b.attrs == a.attrs if hasattr(a, "attrs") else True


def rich_frame():
    frame = pd.DataFrame({
        "float": [1.5, np.nan, -0.0],
        "int": np.array([1, 2, 3], dtype=np.int16),
        "uint": np.array([1, 2, 2**63], dtype=np.uint64),
        "str": ["a", None, "ç"],
        "cat": pd.Categorical(["x", "y", "x"], categories=["z", "y", "x"], ordered=True),
        "unordered": pd.Categorical(["b", "a", "b"], categories=["b", "a", "unused"]),
        "tz": pd.date_range("2020-03-29", periods=3, freq="h", tz="Europe/Paris"),
        "naive_ns": pd.to_datetime(["2020-01-01 00:00:00.000000001"] * 3),
        "Int64": pd.array([1, None, 3], dtype="Int64"),
        "boolean": pd.array([True, None, False], dtype="boolean"),
        "Float32": pd.array([0.5, None, 1.0], dtype="Float32"),
        "string": pd.array(["a", None, "b"], dtype="string"),
        "td": pd.to_timedelta([1, 2, 3], unit="s"),
        "f16": np.array([1, 2, 3], dtype=np.float16),
        "arrow": pd.array([1, None, 3], dtype="int64[pyarrow]"),
        "period": pd.period_range("2020-01", periods=3, freq="M"),
        "interval": pd.interval_range(0, 3),
    }, index=pd.Index([10, 20, 30], name="id"))
    frame.attrs = {"source": "sensor 7", "version": 2}
    return frame


ARROW_CASES = {
    "rich frame": rich_frame(),
    "non-string column names": pd.DataFrame({1: [1, 2], 2: [3.0, 4.0]}),
    "float column names": pd.DataFrame({1.5: [1, 2], 2.5: [3.0, 4.0]}),
    "multiindex both axes": pd.DataFrame(
        np.arange(4.0).reshape(2, 2),
        columns=pd.MultiIndex.from_tuples([("a", 1), ("b", 2)], names=["x", "y"]),
        index=pd.MultiIndex.from_tuples([(1, "u"), (2, "v")], names=["k", "l"])),
    "datetime index with freq": pd.DataFrame({"a": [1, 2, 3]},
                                             index=pd.date_range("2020", periods=3, tz="UTC", freq="D")),
    "range index with step": pd.DataFrame({"a": [1, 2]}, index=pd.RangeIndex(5, 9, 2, name="r")),
    "series": pd.Series([1.0, 2.0], name="s", index=pd.Index(["a", "b"], name="key")),
    "unnamed series": pd.Series([1, 2, 3]),
    "int-named series": pd.Series([1, 2, 3], name=7),
    "categorical series": pd.Series(pd.Categorical(["a", "b"], categories=["b", "a", "c"]), name="c"),
    "index": pd.Index([3, 1, 2], name="n"),
    "range index": pd.RangeIndex(0, 10, 3),
    "datetime index": pd.date_range("2021", periods=5, freq="h", tz="America/New_York"),
    "multiindex": pd.MultiIndex.from_product([[1, 2], ["a", "b"]], names=["i", "j"]),
    "categorical index": pd.CategoricalIndex(["a", "b", "a"], categories=["b", "a"]),
    "seconds resolution (Parquet would make it ms)": pd.DataFrame({"t": pd.array(pd.date_range("2020", periods=2), dtype="datetime64[s]")}),
}

PICKLE_CASES = {
    "object column": pd.DataFrame({"o": [1, "a", None]}),
    "python ints in object column": pd.DataFrame({"o": pd.Series([1, 2], dtype=object)}),
    "lists in cells": pd.DataFrame({"l": [[1], [2, 3]]}),
    "duplicate columns": pd.DataFrame([[1, 2]], columns=["a", "a"]),
    "mixed column labels": pd.DataFrame({1: [1], "a": [2]}),
    "tuple series name": pd.Series([1, 2], name=("a", "b")),
    "empty categorical": pd.DataFrame({"c": pd.Categorical([], categories=["x", "y"])}),
    "sparse": pd.DataFrame({"sp": pd.arrays.SparseArray([0, 0, 1])}),
    "object index": pd.Index(["a", 1]),
}


@pytest.mark.parametrize("case", ARROW_CASES)
def test_arrow_compatible_values_use_arrow_ipc_and_round_trip_exactly(tmp_path, case):
    value = ARROW_CASES[case]
    record, out = roundtrip(value, tmp_path)
    assert record["backend"] == "pandas" and record["artifact_type"] == "Dataset"
    assert list(record["files"]) == ["frame.arrow"]
    assert_identical(value, out)


@pytest.mark.parametrize("case", PICKLE_CASES)
def test_values_arrow_would_change_are_pickled_exactly(tmp_path, case):
    value = PICKLE_CASES[case]
    record, out = roundtrip(value, tmp_path)
    assert record["backend"] == "pandas"
    assert list(record["files"]) == ["frame.pkl"]
    assert_identical(value, out)


def test_frame_holding_notebook_objects_is_pickled_with_dill(tmp_path):
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    script = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
        import pandas as pd
        from kale_magic import marshal
        class Tag:
            def __init__(self, t): self.t = t
        print(list(marshal.save(pd.DataFrame({{"tag": [Tag("a"), Tag("b")]}}), sys.argv[1])["files"]))
    """)
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "v")], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "['frame.dill']"
    assert [tag.t for tag in marshal.load(tmp_path / "v")["tag"]] == ["a", "b"]


frames = pdst.data_frames(
    columns=[
        pdst.column("f", dtype=float),
        pdst.column("i", dtype=np.int32),
        pdst.column("b", dtype=bool),
        pdst.column("t", dtype="datetime64[ns]"),
        pdst.column("s", elements=st.text(max_size=5)),
        pdst.column("c", elements=st.sampled_from(["lo", "mid", "hi"])),
    ],
    index=pdst.range_indexes(max_size=20) | pdst.indexes(dtype=np.int64, max_size=20, unique=False),
)


@settings(max_examples=40, deadline=None)
@given(frame=frames, ordered=st.booleans())
def test_generated_frames_round_trip_exactly(tmp_path_factory, frame, ordered):
    frame = frame.astype({"s": "str", "c": pd.CategoricalDtype(["hi", "mid", "lo"], ordered=ordered)})
    record, out = roundtrip(frame, tmp_path_factory.mktemp("f"))
    assert record["backend"] == "pandas"
    assert_identical(frame, out)


def test_describe_is_cheap_and_shallow():
    frame = pd.DataFrame(np.zeros((1000, 4)), columns=list("abcd"))
    backend, type_name, artifact, size = marshal.describe(frame)
    assert (backend, type_name, artifact) == ("pandas", "pandas.DataFrame", "Dataset")
    assert size == 4 * 8 * 1000 + frame.index.nbytes
    assert marshal.describe(frame["a"])[3] == 8 * 1000 + frame.index.nbytes
    assert marshal.describe(pd.MultiIndex.from_product([[1], [2]]))[3] is None


def test_tampered_arrow_file_is_reported(tmp_path):
    marshal.save(rich_frame(), tmp_path / "v")
    path = tmp_path / "v" / "frame.arrow"
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 1
    path.write_bytes(bytes(blob))
    with pytest.raises(MarshalError, match="'v' from step 's' is corrupted .*checksum"):
        marshal.load(tmp_path / "v", name="v", step="s")


def test_missing_pyarrow_at_load_names_the_pip_line(tmp_path):
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    marshal.save(rich_frame(), tmp_path / "v")
    script = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
        import pandas  # pandas present, pyarrow absent in this "image"
        sys.modules["pyarrow"] = None
        from kale_magic import marshal
        marshal.load(sys.argv[1], name="df", step="prep")
    """)
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "v")], capture_output=True, text=True)
    assert "needs the 'pyarrow' package: pip install pyarrow" in out.stderr
    assert "'df' from step 'prep'" in out.stderr


def test_attrs_arrow_cannot_compare_fall_back_to_pickle(tmp_path):
    frame = pd.DataFrame({"a": [1, 2]})
    frame.attrs = {"weights": np.array([0.5, 0.5])}
    record, out = roundtrip(frame, tmp_path)
    assert list(record["files"]) == ["frame.pkl"]
    np.testing.assert_array_equal(out.attrs["weights"], frame.attrs["weights"])
    pd.testing.assert_frame_equal(out, frame)


def test_loaded_frame_is_writable(tmp_path):
    frame = pd.DataFrame({"x": np.arange(5.0), "s": list("abcde")})
    _, out = roundtrip(frame, tmp_path)
    out.loc[0, "x"] = 42.0
    out.loc[1, "s"] = "z"
    assert out["x"].tolist()[0] == 42.0 and out["s"].tolist()[:2] == ["a", "z"]
