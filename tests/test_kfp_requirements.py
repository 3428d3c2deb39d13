"""What a Kubeflow step installs: the kernel's versions of what it imports, and refusals of what cannot be."""

import importlib.metadata
import json

import pytest

from kale_magic.engines.kfp.requirements import canonical, step_requirements
from kale_magic.errors import ValidationError


def pins(requirements) -> dict[str, str]:
    return {name.lower(): version for name, version in requirements.pins}


def test_a_step_gets_the_kernels_versions_of_what_it_imports_and_of_the_step_runtime():
    found = pins(step_requirements(["import numpy as np\nimport json, os"], where="step 'load'"))
    assert found["numpy"] == importlib.metadata.version("numpy")
    assert found["ipython"] == importlib.metadata.version("ipython")  # the step runtime's own
    assert {"dill", "xxhash", "traitlets"} <= set(found)
    assert "kale-magic" not in found and "json" not in found  # delivered as its wheel; the standard library
    assert "jedi" not in found  # IPython's completer: a third of the size, never used by a step


def test_libraries_of_marshal_backends_come_along():
    assert "pyarrow" in pins(step_requirements(["x = 1"], backend_modules=["pandas", "pyarrow"]))


def fake_distribution(folder, name, origin=None):
    """An installed distribution ``name`` providing the module ``name``, as pip leaves it."""
    (folder / name).mkdir()
    (folder / name / "__init__.py").write_text("VALUE = 1\n")
    info = folder / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "RECORD").write_text(f"{name}/__init__.py,,\n{info.name}/METADATA,,\n")
    if origin is not None:
        (info / "direct_url.json").write_text(json.dumps(origin))


@pytest.mark.parametrize("origin, how", [
    ({"url": "file:///home/me/src/localpkg", "dir_info": {"editable": True}}, "installed in editable mode"),
    ({"url": "file:///home/me/dist/localpkg-1.0.whl", "archive_info": {}}, "installed from a local path"),
])
def test_a_library_installed_from_a_local_path_is_refused(tmp_path, monkeypatch, origin, how):
    fake_distribution(tmp_path, "localpkg", origin)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValidationError) as info:
        step_requirements(["import localpkg"], where="step 'train'")
    message = str(info.value)
    assert message.startswith("Module 'localpkg' imported by step 'train' belongs to localpkg, " + how)
    assert "Kfp.pip_index_urls" in message and "kale-magic image" in message


def test_a_library_from_an_index_is_pinned(tmp_path, monkeypatch):
    fake_distribution(tmp_path, "indexpkg")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert pins(step_requirements(["import indexpkg"]))["indexpkg"] == "1.0"


def test_a_module_of_no_distribution_must_be_in_the_workspace(tmp_path, monkeypatch):
    elsewhere, workspace = tmp_path / "elsewhere", tmp_path / "workspace"
    elsewhere.mkdir()
    workspace.mkdir()
    (elsewhere / "loose.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(elsewhere))
    with pytest.raises(ValidationError, match=r"Module 'loose' imported by step 'a' comes from .*loose\.py, "
                                              r"which no installed distribution provides"):
        step_requirements(["import loose"], workspace=workspace, where="step 'a'")
    (workspace / "loose.py").write_text("X = 1\n")  # the snapshot carries it: nothing to install
    assert "loose" not in pins(step_requirements(["import loose"], workspace=workspace))


@pytest.mark.parametrize("compiled_for, found", [
    (dict(python="2.7"), r"compiled for Python 2\.7 but its image runs Python 3\.\d+: use an image with Python 2\.7"),
    (dict(runtime="0.1.0+k000000000000"), r"compiled by kale-magic 0\.1\.0\+k000000000000 but its image has "
                                          r"kale-magic 0\.1\.0\+k[0-9a-f]{12}: rebuild the image"),
])
def test_a_step_refuses_an_image_with_another_python_or_kale_magic_before_running(tmp_path, monkeypatch,
                                                                                 compiled_for, found):
    """What a user-built image holds is checked when the step starts: one sentence, nothing run or written."""
    from kale_magic.engines.kfp.component import run_component

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    with pytest.raises(RuntimeError, match=f"^step 'train' was {found}"):
        run_component("train", {}, (), {}, {}, {}, report=None, notebook="{}", **compiled_for)
    assert not list(tmp_path.iterdir())


def test_a_step_makes_the_pods_home_which_no_image_has(tmp_path, monkeypatch):
    """HOME is /tmp/kale-home for a non-root pod: made before IPython starts, which otherwise warns in every
    step's log and keeps its profile in a throw-away folder."""
    from kale_magic.engines.kfp.component import _enter_environment

    monkeypatch.setenv("HOME", str(tmp_path / "tmp" / "kale-home"))
    _enter_environment("train", None, None)
    assert (tmp_path / "tmp" / "kale-home").is_dir()


def test_markers_are_evaluated_for_the_linux_step_image_not_the_kernel(monkeypatch):
    """Under a Windows kernel, IPython's pexpect (sys_platform != "win32") is still pinned for the Linux image."""
    import packaging.markers

    from kale_magic.engines.kfp import requirements

    windows = {**packaging.markers.default_environment(), "sys_platform": "win32", "os_name": "nt",
               "platform_system": "Windows"}
    monkeypatch.setattr(packaging.markers, "default_environment", lambda: dict(windows))  # evaluate() updates it
    requirements._closure.cache_clear()
    try:
        assert "pexpect" in {canonical(n) for n in requirements.closure({"ipython"})}
    finally:
        requirements._closure.cache_clear()


def test_a_dependency_only_the_image_needs_and_the_kernel_lacks_is_refused(monkeypatch):
    import packaging.markers

    from kale_magic.engines.kfp import requirements

    real = requirements._distribution.__wrapped__
    monkeypatch.setattr(requirements, "_distribution", lambda name, state: None if name == "pexpect" else real(name, state))
    windows = {**packaging.markers.default_environment(), "sys_platform": "win32", "os_name": "nt",
               "platform_system": "Windows"}
    monkeypatch.setattr(packaging.markers, "default_environment", lambda: dict(windows))  # evaluate() updates it
    requirements._closure.cache_clear()
    try:
        with pytest.raises(ValidationError, match=r"ipython needs pexpect on the Linux step image .* which this kernel "
                                                  r"\(win32\) does not have.*kale-magic image"):
            requirements.closure({"ipython"})
    finally:
        requirements._closure.cache_clear()


@pytest.mark.slow  # pip resolving against the package index, three times
def test_pins_are_checked_against_the_index_for_the_image_platform():
    import importlib.metadata

    from kale_magic.engines.kfp.bootstrap import kernel_python
    from kale_magic.engines.kfp.requirements import Requirements, check_available

    check_available(Requirements((("dill", importlib.metadata.version("dill")),)), (), kernel_python())
    with pytest.raises(ValidationError, match=r"^dill==0\.0\.1, pinned to the kernel's version for the steps, is on "
                                              r"none of the indexes .* for Linux x86_64, Python 3\.\d+ .*"
                                              r"Kfp.pip_index_urls"):
        check_available(Requirements((("dill", "0.0.1"),)), (), kernel_python())
