"""Round trips, records, errors and atomicity of kale_magic.marshal (builtins, numpy, dill)."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as npst

from kale_magic import marshal
from kale_magic.errors import MarshalError, MissingDependency, UnmarshallableError

ROOT = Path(__file__).resolve().parents[1]


def roundtrip(obj, tmp_path, name="v"):
    record = marshal.save(obj, tmp_path / name, name=name)
    return record, marshal.load(tmp_path / name, name=name, step="producer")


def assert_same_array(a, b):
    assert type(b) is type(a)
    assert b.dtype == a.dtype and b.shape == a.shape
    assert b.flags.f_contiguous == a.flags.f_contiguous or a.ndim < 2 or not a.flags.f_contiguous
    assert b.tobytes() == a.tobytes()


# --- builtins: pickle fast path -------------------------------------------------------------

builtin_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text() | st.binary()
    | st.complex_numbers(allow_nan=False) | st.datetimes() | st.decimals(allow_nan=False),
    lambda inner: st.lists(inner) | st.tuples(inner, inner) | st.dictionaries(st.text(), inner)
    | st.frozensets(st.integers()),
    max_leaves=20,
)


@settings(max_examples=40, deadline=None)
@given(value=builtin_values)
def test_builtins_round_trip_exactly_with_pickle(tmp_path_factory, value):
    tmp_path = tmp_path_factory.mktemp("b")
    record, out = roundtrip(value, tmp_path)
    assert record["backend"] == "pickle"
    assert out == value and type(out) is type(value)


def test_record_describes_the_saved_value(tmp_path):
    record = marshal.save({"a": [1, 2]}, tmp_path / "v")
    on_disk = json.loads((tmp_path / "v" / "kale.json").read_text())
    assert on_disk == record
    assert record["backend"] == "pickle" and record["type"] == "builtins.dict"
    assert record["artifact_type"] == "Artifact"
    assert record["kale_magic_version"] == __import__("kale_magic").__version__
    (filename, entry), = record["files"].items()
    assert entry["size"] == (tmp_path / "v" / filename).stat().st_size == record["size"]
    assert entry["checksum"].startswith("xxh3_128:")
    assert sorted(os.listdir(tmp_path)) == ["v"]  # no temp directory left behind


def test_container_holding_a_notebook_object_goes_to_dill(tmp_path):
    """Objects from __main__ must travel by value: the fast path defers to dill."""
    script = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(ROOT)!r})
        from kale_magic import marshal
        class Point:
            def __init__(self, x): self.x = x
            def norm(self): return abs(self.x)
        def double(v): return 2 * v
        record = marshal.save([Point(-3), double, lambda v: v + 1], sys.argv[1])
        print(record["backend"])
    """)
    saved = subprocess.run([sys.executable, "-c", script, str(tmp_path / "v")],
                           capture_output=True, text=True, check=True)
    assert saved.stdout.strip() == "dill"
    point, double, inc = marshal.load(tmp_path / "v")  # this process has no Point class
    assert point.norm() == 3 and double(4) == 8 and inc(1) == 2


# --- numpy -------------------------------------------------------------------------------------

array_dtypes = (npst.scalar_dtypes() | npst.byte_string_dtypes() | npst.unicode_string_dtypes()
                | npst.array_dtypes(npst.scalar_dtypes(), min_size=1, max_size=3))


@settings(max_examples=60, deadline=None)
@given(arr=npst.arrays(array_dtypes, npst.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)),
       order=st.sampled_from("CF"))
def test_arrays_round_trip_bit_exactly(tmp_path_factory, arr, order):
    arr = np.asarray(arr, order=order)
    record, out = roundtrip(arr, tmp_path_factory.mktemp("a"))
    assert record["backend"] == "numpy" and record["artifact_type"] == "Dataset"
    assert_same_array(arr, out)


def test_non_contiguous_and_fortran_arrays(tmp_path):
    base = np.arange(60, dtype=np.int32).reshape(3, 4, 5)
    for i, arr in enumerate([base[:, ::2, 1:], np.asfortranarray(base), base.T]):
        _, out = roundtrip(arr, tmp_path, name=f"a{i}")
        np.testing.assert_array_equal(out, arr)
        assert out.dtype == arr.dtype


def test_saved_array_is_a_plain_npy_loadable_with_mmap(tmp_path):
    arr = np.random.default_rng(0).random((100, 7))
    marshal.save(arr, tmp_path / "v")
    mapped = np.load(tmp_path / "v" / "array.npy", mmap_mode="r")
    assert isinstance(mapped, np.memmap)
    np.testing.assert_array_equal(mapped, arr)


@pytest.mark.parametrize("scalar", [np.float64(1.5), np.float32(-0.0), np.int8(-7), np.uint64(2**63),
                                    np.bool_(True), np.complex128(1 - 2j), np.str_("hé"), np.bytes_(b"x"),
                                    np.datetime64("2024-02-29T12:00", "m"), np.timedelta64(5, "D"),
                                    np.float16(np.inf)])
def test_numpy_scalars_stay_numpy_scalars(tmp_path, scalar):
    record, out = roundtrip(scalar, tmp_path)
    assert record["backend"] == "numpy"
    assert type(out) is type(scalar) and out.dtype == scalar.dtype
    assert out.tobytes() == scalar.tobytes()


def test_numpy_random_generators_continue_their_stream(tmp_path):
    for i, rng in enumerate([np.random.default_rng(42), np.random.RandomState(7)]):
        rng.random(3)
        _, out = roundtrip(rng, tmp_path, name=f"g{i}")
        assert type(out) is type(rng)
        np.testing.assert_array_equal(out.random(5), rng.random(5))


def test_object_arrays_fall_back_to_dill(tmp_path):
    arr = np.array([{"a": 1}, None, "x"], dtype=object)
    record, out = roundtrip(arr, tmp_path)
    assert record["backend"] == "dill"
    assert out.dtype == object and list(out) == list(arr)


# --- dill ------------------------------------------------------------------------------------

def test_functions_and_lambdas_use_dill(tmp_path):
    offset = 10
    record, out = roundtrip(lambda v: v + offset, tmp_path)
    assert record["backend"] == "dill"
    assert out(1) == 11


# --- describe ------------------------------------------------------------------------------------

class NeverSerialize:
    def __reduce__(self):
        raise AssertionError("describe() must not serialize")

    __reduce_ex__ = None


def test_describe_never_serializes():
    assert marshal.describe(NeverSerialize())[0] == "dill"
    huge = np.broadcast_to(np.float64(1.0), (1 << 20, 1 << 20))  # 8 TiB view, no memory behind it
    assert marshal.describe(huge) == ("numpy", "numpy.ndarray", "Dataset", huge.nbytes)
    assert marshal.describe(np.int64(3)) == ("numpy", "numpy.int64", "Dataset", 8)
    assert marshal.describe(b"abc") == ("pickle", "builtins.bytes", "Artifact", 3)
    assert marshal.describe([1, 2]) == ("pickle", "builtins.list", "Artifact", None)


def test_deciding_a_backend_imports_nothing_heavy():
    script = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(ROOT)!r})
        from kale_magic import marshal
        marshal.describe([1, 2]); marshal.describe(object()); marshal.describe(lambda: 0)
        heavy = [m for m in ("numpy", "pandas", "pyarrow", "torch", "sklearn", "dill") if m in sys.modules]
        print(heavy)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _generator():
    yield 1


@pytest.mark.parametrize("make, type_part", [
    (lambda tmp: _generator(), "generator"),
    (lambda tmp: open(tmp / "f.txt", "w"), "TextIOWrapper"),
    (lambda tmp: threading.Lock(), "lock"),
    (lambda tmp: threading.RLock(), "RLock"),
    (lambda tmp: __import__("socket").socket(), "socket"),
    (lambda tmp: __import__("sqlite3").connect(":memory:"), "Connection"),
    (lambda tmp: os, "module"),
    (lambda tmp: threading.Thread(target=print), "Thread"),
    (lambda tmp: subprocess.Popen([sys.executable, "-c", "pass"]), "Popen"),
    (lambda tmp: (i for i in range(3)), "generator"),
])
def test_unmarshallable_types_are_refused_by_type(tmp_path, make, type_part):
    value = make(tmp_path)
    try:
        with pytest.raises(UnmarshallableError, match=type_part) as info:
            marshal.describe(value)
        assert "cannot be passed between steps" in str(info.value)
        with pytest.raises(UnmarshallableError):
            marshal.save(value, tmp_path / "v", name="v")
        assert not (tmp_path / "v").exists()
    finally:
        if value is not os:
            for method in ("close", "wait"):
                getattr(value, method, lambda: None)()


def test_in_memory_buffers_are_marshallable(tmp_path):
    import io

    _, out = roundtrip(io.BytesIO(b"abc"), tmp_path)
    assert out.getvalue() == b"abc"


# --- errors: missing, truncated, tampered -----------------------------------------------------------

def test_missing_value_names_variable_step_and_fix(tmp_path):
    with pytest.raises(MarshalError, match=r"'df' from step 'prep' is missing .*run step 'prep' again"):
        marshal.load(tmp_path / "nope", name="df", step="prep")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MarshalError, match="has no kale.json"):
        marshal.load(tmp_path / "empty", name="df", step="prep")


@pytest.mark.parametrize("value", [np.arange(1000.0), {"k": list(range(100))}, lambda: 1])
def test_truncated_file_is_reported(tmp_path, value):
    record = marshal.save(value, tmp_path / "v")
    data = next(iter(record["files"]))
    with open(tmp_path / "v" / data, "r+b") as f:
        f.truncate(record["files"][data]["size"] - 5)
    with pytest.raises(MarshalError, match=rf"'x' from step 's' is corrupted \({data} .*truncated.*run step 's'"):
        marshal.load(tmp_path / "v", name="x", step="s")


@pytest.mark.parametrize("value", [np.arange(1000.0), {"k": list(range(100))}, lambda: 1, np.float32(2)])
@pytest.mark.parametrize("where", [0.1, 0.5, 0.99])
def test_tampered_byte_is_reported(tmp_path, value, where):
    record = marshal.save(value, tmp_path / "v")
    data = next(iter(record["files"]))
    path = tmp_path / "v" / data
    blob = bytearray(path.read_bytes())
    blob[int(len(blob) * where)] ^= 0x5A
    path.write_bytes(bytes(blob))
    with pytest.raises(MarshalError, match=r"'x' from step 's' is corrupted .*checksum"):
        marshal.load(tmp_path / "v", name="x", step="s")


def test_deleted_data_file_is_reported(tmp_path):
    marshal.save(np.ones(3), tmp_path / "v")
    (tmp_path / "v" / "array.npy").unlink()
    with pytest.raises(MarshalError, match="array.npy .*missing"):
        marshal.load(tmp_path / "v", name="x", step="s")


def test_garbled_record_is_reported(tmp_path):
    marshal.save(1, tmp_path / "v")
    (tmp_path / "v" / "kale.json").write_text("{not json")
    with pytest.raises(MarshalError, match="'x' from step 's' has an unreadable record"):
        marshal.load(tmp_path / "v", name="x", step="s")


def test_backend_comes_from_the_record_not_the_extension(tmp_path):
    marshal.save(np.arange(3), tmp_path / "v")
    record = json.loads((tmp_path / "v" / "kale.json").read_text())
    record["backend"] = "no-such-backend"
    (tmp_path / "v" / "kale.json").write_text(json.dumps(record))
    with pytest.raises(MarshalError, match="'no-such-backend' marshal backend, which is not installed here"):
        marshal.load(tmp_path / "v", name="x", step="s")


def test_library_missing_in_the_loading_process_names_the_pip_line(tmp_path):
    marshal.save(np.arange(3), tmp_path / "v")
    script = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(ROOT)!r})
        sys.modules["numpy"] = None  # as if numpy were not installed in this step's image
        from kale_magic import marshal
        marshal.load(sys.argv[1], name="arr", step="prep")
    """)
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "v")], capture_output=True, text=True)
    assert out.returncode != 0
    assert "MissingDependency" in out.stderr
    assert "Loading 'arr' from step 'prep' (saved with the 'numpy' marshal backend) needs the 'numpy' package: " \
           "pip install numpy" in out.stderr


def test_missing_dependency_is_a_kale_error(tmp_path):
    class NeedsLibrary(marshal.Backend):
        name = "needs-lib"
        packages = {"not_a_real_module_xyz": "real-package-name"}

        def handles(self, obj):
            return obj == "special"

        def save(self, obj, directory):
            (directory / "x").write_text(obj)
            return ["x"]

        def load(self, directory, record):
            self.require("not_a_real_module_xyz")

    marshal.register(NeedsLibrary, priority=200)
    try:
        marshal.save("special", tmp_path / "v")
        with pytest.raises(MissingDependency, match="pip install real-package-name"):
            marshal.load(tmp_path / "v", name="x", step="s")
    finally:
        marshal.registry.unregister("needs-lib")


# --- atomic writes ------------------------------------------------------------------------------

def test_saving_again_replaces_the_directory(tmp_path):
    marshal.save(np.arange(5), tmp_path / "v")
    marshal.save("text now", tmp_path / "v")
    assert marshal.load(tmp_path / "v") == "text now"
    assert sorted(os.listdir(tmp_path / "v")) == ["kale.json", "value.pkl"]
    assert os.listdir(tmp_path) == ["v"]


def test_failed_save_leaves_previous_value_and_no_litter(tmp_path):
    marshal.save([1, 2], tmp_path / "v")

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(MarshalError, match=r"Could not save 'bad' of type .*Unpicklable.*boom"):
        marshal.save(Unpicklable(), tmp_path / "v", name="bad")
    assert marshal.load(tmp_path / "v") == [1, 2]
    assert os.listdir(tmp_path) == ["v"]


SLOW_WRITER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r})
    from kale_magic import marshal

    class Slow(marshal.Backend):
        name = "slow"
        def handles(self, obj):
            return obj == "slow"
        def save(self, obj, directory):
            with open(directory / "data.bin", "wb") as f:
                f.write(b"half of the data")
                f.flush()
                print("writing", flush=True)
                time.sleep(60)
            return ["data.bin"]

    marshal.register(Slow, priority=1000)
    marshal.save("slow", sys.argv[1])
""")


@pytest.mark.parametrize("previous", [None, [1, 2, 3]])
def test_sigkilled_writer_leaves_nothing_loadable_at_path(tmp_path, previous):
    target = tmp_path / "v"
    if previous is not None:
        marshal.save(previous, target)
    writer = subprocess.Popen([sys.executable, "-c", SLOW_WRITER.format(root=str(ROOT)), str(target)],
                              stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "writing"
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    writer.stdout.close()
    if previous is None:
        with pytest.raises(MarshalError, match="is missing"):
            marshal.load(target, name="v", step="s")
    else:
        assert marshal.load(target) == previous
    # the dead writer's temp directory is hidden and never mistaken for the value
    assert [p for p in os.listdir(tmp_path) if not p.startswith(".")] == ([] if previous is None else ["v"])


def test_objects_defined_in_an_ipython_shell_load_in_another_process(tmp_path):
    """Step cells run in an InteractiveShell whose module is named __main__: its classes travel by value."""
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    config = Config()
    config.HistoryManager.enabled = False
    shell = InteractiveShell(config=config)
    try:
        result = shell.run_cell(textwrap.dedent(f"""
            from kale_magic import marshal
            def helper(x):
                return x + 1
            class Scaler:
                def __init__(self, k):
                    self.k = k
                def __call__(self, x):
                    return helper(x) * self.k
            record = marshal.save({{"scale": Scaler(3), "inc": lambda v: helper(v)}}, {str(tmp_path / "v")!r})
        """))
        assert result.success, result.error_in_exec
        assert shell.user_ns["Scaler"].__module__ == "__main__"
        assert shell.user_ns["record"]["backend"] == "dill"
    finally:
        InteractiveShell.clear_instance()
    script = f"import sys; sys.path.insert(0, {str(ROOT)!r})\nfrom kale_magic import marshal\n" \
             f"v = marshal.load({str(tmp_path / 'v')!r}); print(v['scale'](1), v['inc'](1))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.stdout.split() == ["6", "2"], out.stderr


def test_non_durable_save_is_the_same_value(tmp_path):
    arr = np.arange(10.0)
    durable = marshal.save(arr, tmp_path / "a")
    fast = marshal.save(arr, tmp_path / "b", durable=False)
    assert fast["checksum"] == durable["checksum"]
    np.testing.assert_array_equal(marshal.load(tmp_path / "b"), arr)
