"""The engine registry: built-ins, runtime registrations, entry points (a broken one is reported, not fatal),
how a run picks its engine, and the import rules that keep engine names inside ``engines/``."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from kale_magic import engines
from kale_magic.engines.local.kind import LocalType
from kale_magic.engines.registry import EngineRegistry, EngineType
from kale_magic.errors import KaleError

PACKAGE = Path(__file__).resolve().parents[1] / "kale_magic"


def args(**given):
    return SimpleNamespace(**{"host": None, "upload_only": False, **given})


def test_the_built_in_engines_are_registered_and_an_unknown_one_names_them():
    assert engines.registry.names()[:2] == ["local", "kfp"]
    assert engines.get("local").default and engines.get("local").local
    with pytest.raises(KaleError, match=r"no engine named 'nomad'; known engines: kfp, local"):
        engines.get("nomad")


@pytest.mark.parametrize("engine, given, settings, chosen", [
    (None, {}, {}, "local"),
    ("kfp", {}, {}, "kfp"),
    (None, {}, {"kfp": {"host": "http://kfp"}}, "kfp"),  # a configured host
    ("local", {}, {"kfp": {"host": "http://kfp"}}, "local"),  # an explicit --engine wins over configuration
    ("local", {"host": "http://kfp"}, {}, "kfp"),  # --host is KFP's own option
    (None, {"upload_only": True}, {}, "kfp"),
])
def test_a_run_picks_its_engine(engine, given, settings, chosen, monkeypatch):
    monkeypatch.delenv("KF_PIPELINES_ENDPOINT", raising=False)
    assert engines.registry.choose(engine, args(**given), settings).name == chosen


def test_kf_pipelines_endpoint_counts_as_a_configured_host(monkeypatch):
    monkeypatch.setenv("KF_PIPELINES_ENDPOINT", "http://kfp")
    assert engines.registry.choose(None, args(), {}).name == "kfp"


@pytest.fixture
def plugin_site(tmp_path, monkeypatch):
    """An installed distribution declaring two engines: one that loads, one whose module is missing."""
    site = tmp_path / "site"
    info = site / "kale_engine_demo-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: kale-engine-demo\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[kale_magic.engines]\ntwin = kale_engine_demo:Twin\nbroken = kale_engine_not_installed:Engine\n")
    (site / "kale_engine_demo.py").write_text(textwrap.dedent("""
        from kale_magic.engines.local.kind import LocalType

        class Twin(LocalType):
            '''The local engine under another name, as a plug-in.'''
            name = "twin"
            default = False
    """))
    monkeypatch.syspath_prepend(str(site))
    return site


def test_entry_points_add_engines_and_a_broken_one_is_reported_not_fatal(plugin_site):
    registry = EngineRegistry()
    registry.register(LocalType)
    with pytest.warns(UserWarning, match=r"engine entry point 'broken' .* failed to load"):
        names = registry.names()
    assert names == ["local", "twin"]
    assert "ModuleNotFoundError" in registry.broken["broken"]
    with pytest.raises(KaleError, match=r"engine 'broken' failed to load \(ModuleNotFoundError"):
        registry.get("broken")


def test_a_registered_engine_runs_a_notebook_by_its_name(kernel):
    class Twin(LocalType):
        name = "twin"
        default = False

    engines.register(Twin)
    try:
        kernel.cells("%%step make\nxs = [1, 2]", "%%step total\ntotal = sum(xs)")
        run = kernel.run("%kale_run --engine twin")
    finally:
        engines.registry.unregister("twin")
    assert run.status == "succeeded" and run.state.engine == "twin"
    assert run.load("total") == kernel.ns["total"] == 3


def test_register_refuses_what_is_not_an_engine_type():
    with pytest.raises(TypeError, match="must be a kale_magic.engines.EngineType"):
        EngineRegistry(group=None).register(object())
    with pytest.raises(TypeError, match="has no name"):
        EngineRegistry(group=None).register(EngineType)


def modules_outside(folder: str):
    for path in sorted(PACKAGE.rglob("*.py")):
        if not path.is_relative_to(PACKAGE / folder):
            yield path, ast.parse(path.read_text(encoding="utf-8"))


def test_no_engine_name_is_compared_outside_engines():
    names = {"local", "kfp"}
    found = []
    for path, tree in modules_outside("engines"):
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                constants = [c for c in (node.left, *node.comparators) if isinstance(c, ast.Constant)]
                if any(c.value in names for c in constants):
                    found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert found == []


def test_nothing_outside_engines_kfp_imports_it_but_the_old_component_path():
    found = []
    for path, tree in modules_outside("engines/kfp"):
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and "kfp" in node.module.split(".") \
                    and node.level > 0 or isinstance(node, ast.ImportFrom) and node.module == "kale_magic.engines.kfp":
                found.append(str(path.relative_to(PACKAGE)))
    # the compiled YAML's entry point (kale_magic.kfp_step) and the registry's list of built-in engines
    assert sorted(set(found)) == ["engines/__init__.py", "kfp_step.py"]


def test_kfp_settings_are_the_kfp_engines_and_the_old_kale_names_still_set_them(kernel, kfp_env, capsys):
    kernel.cells("%%step make\nxs = [1, 2]")
    kernel.run("%config Kfp.base_image = 'registry.example/team/steps:2'")
    kernel.run("%config Kale.volumes = ['data:/mnt/data']")
    kernel.run("%config Kale.caching = False")
    kernel.run("%config Kale.volumes = ['data:/mnt/other']")
    err = capsys.readouterr().err
    assert err.count("kale: %config Kale.volumes is now %config Kfp.volumes; the old name works for now") == 1
    assert "Kale.caching is now %config Kfp.caching" in err
    settings = kernel.magics.engine_settings["kfp"]
    assert (settings.base_image, settings.volumes, settings.caching) == (
        "registry.example/team/steps:2", ["data:/mnt/other"], False)
    assert kernel.magics.volumes == ["data:/mnt/other"]  # read under the old name too
    assert not kernel.magics.has_trait("volumes")
    kernel.run("%config Kfp.host = 'http://127.0.0.1:9'")  # a configured host picks KFP
    run = kernel.run("%kale_run --compile-only")
    assert run.state.engine == "kfp" and "registry.example/team/steps:2" in run.pipeline_file.read_text()


def test_unloading_removes_the_engine_settings_from_config(kernel):
    settings = kernel.magics.engine_settings["kfp"]
    assert settings in kernel.shell.configurables
    kernel.shell.run_line_magic("unload_ext", "kale_magic")
    assert settings not in kernel.shell.configurables
