"""The compile's advice to build an image when a Kubeflow step would unpack a large environment before it starts."""

import re

import pytest

from kale_magic.engines.kfp.footprint import ADVICE_BYTES, UNPACK_MEMORY_BYTES_PER_SECOND, installed_bytes
from kale_magic.plan.model import StepOptions

BIG = ADVICE_BYTES + (44 << 20)  # bytes of the big distribution's one file (sparse: no disk used)
NOTE = re.compile(r"note: the steps' environment is ([\d.]+) (MiB|GiB) installed and step '(\w+)' unpacks "
                  r"([\d.]+) (MiB|GiB) of it before its code runs \(~([\d.]+) s per step (?:in memory|on disk), "
                  r"after downloading it\); to start steps faster, "
                  r"build an image with everything installed: kale-magic image (\S+) -t TAG, then "
                  r"%config Kfp.base_image = 'TAG' and %config Kfp.install_packages = False")


@pytest.fixture
def big_distribution(tmp_path_factory, monkeypatch):
    """An installed distribution ``bigpkg`` 1.0 (outside the workspace, as pip leaves it) whose one data file is
    larger than the advice's threshold; its RECORD lists no sizes, as for files pip writes itself."""
    site = tmp_path_factory.mktemp("site")
    (site / "bigpkg").mkdir()
    (site / "bigpkg" / "__init__.py").write_text("VALUE = 1\n")
    with open(site / "bigpkg" / "blob.bin", "wb") as blob:
        blob.truncate(BIG)
    info = site / "bigpkg-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: bigpkg\nVersion: 1.0\n")
    (info / "RECORD").write_text("bigpkg/__init__.py,,\nbigpkg/blob.bin,,\nbigpkg-1.0.dist-info/METADATA,,\n"
                                 "bigpkg-1.0.dist-info/RECORD,,\n")
    monkeypatch.syspath_prepend(str(site))
    return site


def mib(number: str, unit: str) -> float:
    return float(number) * (1024 if unit == "GiB" else 1)


CELLS = ["%%imports\nimport numpy as np", "%%step load\nx = np.arange(4.0)", "%%step total\ns = float(x.sum())"]


def compile_only(kernel, root):
    """``%kale_run --compile-only`` with a folder as the pipeline root (everything published as the YAML is
    written: the Compile task has nothing else to say)."""
    kernel.run(f"%config Kfp.pipeline_root = {str(root)!r}")
    run = kernel.run("%kale_run --engine kfp --compile-only --no-snapshot")
    assert run.status == "compiled"
    return run.state.tasks["Compile"].message


def test_a_step_importing_a_big_distribution_gets_one_note_naming_sizes_and_the_image_command(
        kernel, big_distribution, tmp_path):
    kernel.cells(*CELLS, "%%step big\nimport bigpkg\nv = bigpkg.VALUE + s")
    message = compile_only(kernel, tmp_path / "root")
    match = NOTE.fullmatch(message)
    assert match, message
    environment, step, unpacked = mib(*match.group(1, 2)), match.group(3), mib(*match.group(4, 5))
    assert step == "big"  # the step that unpacks the most: the others import numpy only
    assert installed_bytes("bigpkg", "1.0") >= BIG
    assert BIG / 2**20 < unpacked <= environment  # bigpkg with the step runtime, within the whole environment
    assert "per step in memory" in message  # its volume: what it receives fits well within 1 GiB
    assert float(match.group(6)) == round(unpacked * 2**20 / UNPACK_MEMORY_BYTES_PER_SECOND, 1)
    assert match.group(7) == "NOTEBOOK"  # the kernel runs no notebook file here


def test_a_notebook_of_small_distributions_gets_no_note(kernel, tmp_path):
    """numpy with the step runtime: under the threshold."""
    kernel.cells(*CELLS)
    assert compile_only(kernel, tmp_path / "root") == "2 step notebooks"


@pytest.mark.parametrize("settings", [
    ["%config Kfp.base_image = 'registry.example/steps:1'", "%config Kfp.install_packages = False"],
    ["%config Kfp.install_packages = False"],  # the stock image, told it has everything
    ["%config Kfp.base_image = 'registry.example/steps:1'"],  # an image whose contents the compile cannot know
])
def test_an_image_based_compile_never_gets_the_note(kernel, big_distribution, tmp_path, settings):
    kernel.cells(*settings, *CELLS, "%%step big\nimport bigpkg\nv = bigpkg.VALUE + s")
    assert compile_only(kernel, tmp_path / "root") == "3 step notebooks"


@pytest.mark.slow  # kale-magic compile in a subprocess
def test_kale_magic_compile_prints_the_note_in_one_line_for_a_real_big_library(tmp_path):
    """torch (the test environment has it) installed is far past the threshold: the command says so in one
    line on stderr, and still writes the YAML."""
    from cli_helpers import code, kale_magic, write

    write(tmp_path / "nb.ipynb", code("%load_ext kale_magic"), code("%%imports\nimport torch"),
          code("%%step make\nt = torch.ones(3)"), code("%%step total\ns = float(t.sum())"))
    result = kale_magic("compile", "nb.ipynb", "-o", "p.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if "kale-magic image" in line]
    assert len(notes) == 1, result.stderr
    match = NOTE.fullmatch(notes[0].removeprefix("kale-magic: "))
    assert match, notes[0]
    assert match.group(3) == "make"  # both unpack torch; the first of the largest is named
    assert "per step on disk" in notes[0]  # torch with the runtime: more than a memory volume takes (1 GiB)
    assert mib(*match.group(4, 5)) * 2**20 > ADVICE_BYTES
    assert match.group(7) == "nb.ipynb"  # the command names the notebook
    assert (tmp_path / "p.yaml").is_file()


# where a step unpacks: a memory-backed emptyDir sized from what it receives ---------------------------------

def compiled_executors(tmp_path, monkeypatch, sizes=None, **changes):
    """The three-step plan compiled with fixed pins, every distribution 10 MiB installed (``sizes``: others):
    executor label -> (its Kubernetes config, its container's resources, its bootstrap's plan)."""
    import dataclasses
    import json

    import yaml
    from kfp_plans import three_step_plan
    from test_compiler import fix_runtime

    from kale_magic.engines.kfp import footprint as kfp_footprint
    from kale_magic.engines.kfp.compiler import compile_pipeline

    fix_runtime(monkeypatch)
    if sizes is not None:
        monkeypatch.setattr(kfp_footprint, "installed_bytes", lambda name, version: sizes.get(name, 10 << 20))
    plan = three_step_plan()
    for step, options in changes.pop("options", {}).items():
        plan.steps[step] = dataclasses.replace(plan.steps[step], options=options)
    spec, platform = yaml.safe_load_all(compile_pipeline(plan, tmp_path / "p.yaml", **changes).read_text())
    configs = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    out = {}
    for label, executor in spec["deploymentSpec"]["executors"].items():
        command = executor.get("container", {}).get("command", [])
        bootstrap = json.loads(command[3]) if command[:2] == ["python3", "-c"] and len(command) > 3 and \
            command[3].startswith("{") else None
        out[label] = (configs.get(label, {}), executor.get("container", {}).get("resources", {}), bootstrap)
    return out


def test_each_step_unpacks_into_a_memory_volume_as_large_as_what_it_receives(tmp_path, monkeypatch):
    """load receives five archives of 10 MiB (numpy, IPython, prompt-toolkit, dill, kfp): a quarter more and
    64 MiB of room, 127 MiB, which its memory request also asks for; train's --memory 1Gi holds its volume and
    stays its request; the environment task unpacks nothing."""
    from kale_magic.engines.kfp.footprint import UNPACK_MOUNT

    executors = compiled_executors(tmp_path, monkeypatch)
    config, resources, bootstrap = executors["exec-load"]
    assert config["emptyDirMounts"] == [{"medium": "Memory", "mountPath": UNPACK_MOUNT, "sizeLimit": "127Mi",
                                         "volumeName": "kale-unpacked"}]
    assert resources["resourceMemoryRequest"] == "127Mi"
    assert bootstrap["memory"] == UNPACK_MOUNT and bootstrap["disk"] == ""
    config, resources, bootstrap = executors["exec-train"]
    assert config["emptyDirMounts"][0]["sizeLimit"] == "114Mi"  # four archives: it does not receive numpy
    assert resources["resourceMemoryRequest"] == resources["resourceMemoryLimit"] == "1Gi"
    assert "emptyDirMounts" not in executors["exec-kale-environment"][0]


@pytest.mark.parametrize("changes, reason", [
    (dict(options={"load": StepOptions(memory="250Mi")}),
     "--memory 250Mi cannot hold its 127.0 MiB and as much again for its code"),
    (dict(sizes={"numpy": 0}), "the notebook's kernel could not tell the installed size of numpy"),
    (dict(sizes={"numpy": 900 << 20}), "its 1.2 GiB are more than 1.0 GiB"),
])
def test_a_step_unpacks_on_disk_when_memory_cannot_hold_its_files_or_their_size_is_unknown(
        tmp_path, monkeypatch, changes, reason):
    """No volume, no memory request beyond the user's, and the step's log will say why."""
    executors = compiled_executors(tmp_path, monkeypatch, **changes)
    config, resources, bootstrap = executors["exec-load"]
    assert "emptyDirMounts" not in config
    assert resources.get("resourceMemoryRequest") in (None, "250Mi")
    assert bootstrap["memory"] == "" and bootstrap["disk"] == reason


def test_an_image_that_holds_everything_unpacks_nothing_and_asks_for_no_volume(tmp_path, monkeypatch):
    executors = compiled_executors(tmp_path, monkeypatch, install_packages=False)
    assert not [label for label, (config, _, _) in executors.items() if "emptyDirMounts" in config]
    assert not [label for label, (_, _, bootstrap) in executors.items() if bootstrap]


@pytest.mark.parametrize("quantity, size", [("1000", 1000), ("512Mi", 512 << 20), ("2Gi", 2 << 30),
                                            ("1G", 10**9), ("300M", 3 * 10**8), ("4Ki", 4096)])
def test_memory_quantities_read_as_kubernetes_reads_them(quantity, size):
    from kale_magic.engines.kfp.footprint import quantity_bytes

    assert quantity_bytes(quantity) == size
