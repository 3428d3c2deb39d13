"""The backend registry: priorities, runtime registration, and a third-party backend found via entry points."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kale_magic import marshal
from kale_magic.errors import MarshalError
from kale_magic.marshal import Backend, BackendRegistry, default_registry

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = Path(__file__).resolve().parent / "marshal_plugin"


class Celsius(float):
    pass


class CelsiusBackend(Backend):
    name = "celsius"
    artifact_type = "Dataset"

    def handles(self, obj):
        return isinstance(obj, Celsius)

    def save(self, obj, directory):
        (directory / "degrees.txt").write_text(repr(float(obj)))  # not via create(): hashed afterwards
        return ["degrees.txt"]

    def load(self, directory, record):
        return Celsius(float((directory / "degrees.txt").read_text()))


@pytest.fixture
def celsius():
    backend = marshal.register(CelsiusBackend, priority=70)
    yield backend
    marshal.registry.unregister("celsius")


def test_builtin_backends_in_documented_priority_order():
    names = BackendRegistry(group=None)
    for backend in marshal.BUILTIN_BACKENDS:
        names.register(backend)
    assert names.names() == ["numpy", "pandas", "sklearn", "torch-tensor", "torch", "xgboost", "lightgbm",
                             "pickle", "dill"]
    assert names.names()[-1] == "dill"  # the last resort


def test_runtime_registration_round_trips_and_records_the_backend(tmp_path, celsius):
    assert celsius.priority == 70
    assert marshal.describe(Celsius(21.5)) == ("celsius", f"{__name__}.Celsius", "Dataset", None)
    record = marshal.save(Celsius(21.5), tmp_path / "t", name="t")
    assert record["backend"] == "celsius" and record["backend_version"] == "1"
    assert record["files"]["degrees.txt"]["size"] == len("21.5")
    out = marshal.load(tmp_path / "t")
    assert type(out) is Celsius and out == 21.5
    (tmp_path / "t" / "degrees.txt").write_text("99.9")  # same size, different bytes
    with pytest.raises(MarshalError, match="'t' from step 'measure' is corrupted .*checksum"):
        marshal.load(tmp_path / "t", name="t", step="measure")


def test_registration_order_priority_and_replacement(celsius):
    names = marshal.registry.names()
    assert names.index("numpy") < names.index("celsius") < names.index("pickle")
    marshal.register(CelsiusBackend, priority=5)  # same name: replaces, moves below pickle
    names = marshal.registry.names()
    assert names.count("celsius") == 1 and names.index("pickle") < names.index("celsius")


def test_get_unknown_backend_names_the_known_ones():
    with pytest.raises(MarshalError, match=r"no marshal backend named 'parquet2'; known backends: .*dill.*numpy"):
        marshal.registry.get("parquet2")


@pytest.mark.parametrize("bad, message", [
    (object(), "must be a kale_magic.marshal.Backend"),
    (type("NoName", (Backend,), {}), "has no name"),
    (type("BadType", (Backend,), {"name": "bad", "artifact_type": "Table"}), "artifact_type 'Table'"),
])
def test_register_rejects_invalid_backends(bad, message):
    with pytest.raises(TypeError, match=message):
        BackendRegistry(group=None).register(bad)


def test_a_backend_may_decline_a_value_at_save_time(tmp_path):
    class Picky(Backend):
        name = "picky"

        def handles(self, obj):
            return isinstance(obj, list)

        def save(self, obj, directory):
            (directory / "partial").write_bytes(b"x")
            raise marshal.BackendDeclined("only short lists")

    marshal.register(Picky, priority=500)
    try:
        record = marshal.save([1, 2], tmp_path / "v")
    finally:
        marshal.registry.unregister("picky")
    assert record["backend"] == "pickle" and list(record["files"]) == ["value.pkl"]


# --- third-party backend through a real entry point -------------------------------------------------

@pytest.fixture(scope="session")
def plugin_site(tmp_path_factory):
    """Build tests/marshal_plugin with pip (its pyproject declares the entry points) into a private site dir."""
    site = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(site), str(PLUGIN)], check=True)
    assert (site / "kale_marshal_demo-0.1.0.dist-info" / "entry_points.txt").exists()
    return site


@pytest.fixture
def plugin_path(plugin_site, monkeypatch):
    monkeypatch.syspath_prepend(str(plugin_site))
    yield plugin_site
    for module in [m for m in sys.modules if m.startswith("kale_marshal_demo")]:
        del sys.modules[module]


def test_entry_point_backend_is_discovered_lazily(plugin_path, tmp_path):
    registry = default_registry()
    assert "kale_marshal_demo.kale_backend" not in sys.modules  # nothing loaded before first use
    from kale_marshal_demo.geometry import LabelledPoint, Point

    with pytest.warns(UserWarning, match="'demo-broken' .*failed to load"):
        backend = registry.get("demo-point")
    assert type(backend).__module__ == "kale_marshal_demo.kale_backend" and backend.priority == 60
    assert registry.names().index("demo-point") < registry.names().index("pickle")
    with pytest.raises(MarshalError, match="'demo-broken' failed to load .*ModuleNotFoundError"):
        registry.get("demo-broken")

    for i, point in enumerate([Point(1, 2, "a"), LabelledPoint(3.5, -1)]):
        assert registry.backend_for(point) is backend
        from kale_magic.marshal import store

        record = store.save(registry, point, tmp_path / f"p{i}", name="p")
        assert (record["backend"], record["backend_version"], record["artifact_type"]) == ("demo-point", "2", "Dataset")
        assert json.loads((tmp_path / f"p{i}" / "point.json").read_text())["x"] == point.x
        assert store.load(registry, tmp_path / f"p{i}") == point


def test_entry_point_backend_across_processes(plugin_site, tmp_path):
    """A step saves with the plug-in; another step with it loads; one without it gets a clear message."""
    prelude = f"import sys; sys.path[:0] = [{str(ROOT)!r}, sys.argv[2]]\nfrom kale_magic import marshal\n"
    save = prelude + textwrap.dedent("""
        from kale_marshal_demo.geometry import Point
        print(marshal.save(Point(4, 5, "saved"), sys.argv[1])["backend"])
    """)
    load = prelude + "print(marshal.load(sys.argv[1], name='p', step='make'))"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    run = lambda script, site: subprocess.run([sys.executable, "-c", script, str(tmp_path / "p"), site],
                                              capture_output=True, text=True, env=env)
    saved = run(save, str(plugin_site))
    assert saved.stdout.strip() == "demo-point", saved.stderr
    assert run(load, str(plugin_site)).stdout.strip() == "Point(4, 5, 'saved')"
    missing = run(load, str(tmp_path / "empty-site"))
    assert "'p' from step 'make' was saved with the 'demo-point' marshal backend, which is not installed " \
           "here" in missing.stderr
