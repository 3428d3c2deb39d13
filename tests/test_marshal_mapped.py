"""Large arrays load as copy-on-write mappings: exact values and type, private writes, damage refused."""

import mmap
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as npst
from test_marshal import array_dtypes, assert_same_array, roundtrip

from kale_magic import marshal
from kale_magic.errors import MarshalError
from kale_magic.marshal import hashing, numpy_backend

BIG = 3 << 17  # float64 elements: 3 MiB, above numpy_backend.MAP_FROM_BYTES


def always_mapped():
    """Every array goes through the mapping path, however small."""
    return mock.patch.object(numpy_backend, "MAP_FROM_BYTES", 0)


def is_mapped(arr) -> bool:
    return isinstance(arr.base, mmap.mmap)


@settings(max_examples=80, deadline=None)
@given(arr=npst.arrays(array_dtypes, npst.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)),
       order=st.sampled_from("CF"))
def test_every_dtype_and_order_round_trips_exactly_through_a_mapping(tmp_path_factory, arr, order):
    arr = np.asarray(arr, order=order)
    with always_mapped():
        _, out = roundtrip(arr, tmp_path_factory.mktemp("a"))
    assert_same_array(arr, out)
    assert type(out) is np.ndarray and is_mapped(out)


@pytest.mark.parametrize("make", [
    lambda: np.arange(BIG, dtype=np.float64),
    lambda: np.asfortranarray(np.arange(BIG * 2, dtype=np.int32).reshape(-1, 3)),
    lambda: np.arange(BIG * 3, dtype=np.float64).reshape(3, -1)[:, ::3],  # a strided view
    lambda: np.arange(BIG, dtype=np.int64)[::-1],  # negative strides
    lambda: np.arange(BIG).astype("datetime64[ns]"),
    lambda: np.zeros(BIG // 2, dtype=[("t", "m8[s]"), ("x", "<f4", (2,)), ("name", "U3")]),
    lambda: np.arange(BIG, dtype=">i8"),  # big-endian
    lambda: np.zeros(BIG, dtype=[("é", "<i8")]),  # a non-latin-1 field name: .npy format 3.0
], ids=["c", "fortran", "strided", "reversed", "datetime", "structured", "big-endian", "utf8-field"])
def test_large_arrays_load_exactly_as_plain_ndarrays(tmp_path, make):
    arr = make()
    _, out = roundtrip(arr, tmp_path)
    assert type(out) is np.ndarray and not isinstance(out, np.memmap)
    assert out.dtype == arr.dtype and out.shape == arr.shape
    assert out.tobytes() == arr.tobytes()
    assert out.flags.writeable
    assert is_mapped(out)


def test_writes_to_a_loaded_array_stay_private(tmp_path):
    arr = np.arange(BIG, dtype=np.float64)
    record = marshal.save(arr, tmp_path / "v")
    data = tmp_path / "v" / "array.npy"
    first = marshal.load(tmp_path / "v")
    first[:] = -1.0
    first[123] = 7.0
    assert hashing.file_digest(data) == (record["size"], hashing.digest_of(record["files"]["array.npy"]))
    second = marshal.load(tmp_path / "v")
    np.testing.assert_array_equal(second, arr)  # another reader sees what was saved
    assert first[123] == 7.0 and first[0] == -1.0


def test_a_loaded_array_outlives_its_file(tmp_path):
    """Saved values are replaced by renaming, never rewritten: a mapping keeps the old bytes."""
    arr = np.arange(BIG, dtype=np.float64)
    marshal.save(arr, tmp_path / "v")
    loaded = marshal.load(tmp_path / "v")
    marshal.save("replaced", tmp_path / "v")
    np.testing.assert_array_equal(loaded, arr)


def test_small_arrays_are_read_into_memory(tmp_path):
    _, out = roundtrip(np.arange(10.0), tmp_path)
    assert type(out) is np.ndarray and out.flags.owndata


def damage(path, how):
    size = path.stat().st_size
    if how == "truncated":
        with open(path, "r+b") as f:
            f.truncate(size - 64)
    else:
        with open(path, "r+b") as f:
            f.seek(size // 2)
            byte = f.read(1)
            f.seek(size // 2)
            f.write(bytes([byte[0] ^ 0x01]))


@pytest.mark.parametrize("how, reason", [("truncated", "truncated"), ("bit-flipped", "checksum")])
def test_a_damaged_mapped_file_is_refused(tmp_path, how, reason):
    marshal.save(np.arange(BIG, dtype=np.float64), tmp_path / "v")
    damage(tmp_path / "v" / "array.npy", how)
    with pytest.raises(MarshalError, match=rf"'x' from step 's' is corrupted \(array.npy .*{reason}"):
        marshal.load(tmp_path / "v", name="x", step="s")


def test_a_file_truncated_after_its_size_was_checked_is_refused(tmp_path):
    record = marshal.save(np.arange(BIG, dtype=np.float64), tmp_path / "v")
    damage(tmp_path / "v" / "array.npy", "truncated")
    with pytest.raises(hashing.ChecksumMismatch, match="truncated"):
        hashing.map_verified(tmp_path / "v", record, "array.npy")


def test_durable_saves_start_write_back_and_keep_the_same_record(tmp_path):
    arr = np.arange(3 * hashing.WRITEBACK_STEP // 8, dtype=np.float64)
    calls = []
    real = hashing._sync_file_range()
    if real is None:
        pytest.skip("no sync_file_range on this platform")
    with mock.patch.object(hashing, "_sync_file_range", return_value=lambda *a: calls.append(a) or real(*a)):
        durable = marshal.save(arr, tmp_path / "a")
        assert len(calls) >= 2  # write-back started while writing, not only by the final fsync
        calls.clear()
        fast = marshal.save(arr, tmp_path / "b", durable=False)
        assert calls == []
    assert durable["checksum"] == fast["checksum"]
    np.testing.assert_array_equal(marshal.load(tmp_path / "a"), arr)
