"""Each step takes, of the environment, only the archives its own requirements need.

The environment task has one output per distribution besides the runtime group's folder (``environment``:
kfp, kale-magic, what the runtime loads first, ``_common``); a step's inputs are that folder and the archives
of its requirements, plus those of the steps whose pickled values it loads; a step whose imports its code
cannot tell (``__import__``, a magic, a module of the notebook's folder) takes every archive.
"""

import json
import os

import pytest
import yaml
from test_compiler import fix_runtime

from kale_magic.engines.kfp.bootstrap import ARCHIVE_INPUT
from kale_magic.engines.kfp.compiler import compile_pipeline
from kale_magic.engines.kfp.delivery import SPEC_LIMIT, container_specs
from kale_magic.engines.kfp.requirements import Requirements
from kale_magic.plan.model import Plan, StepPlan, Transfer

PINS = {"numpy": (("numpy", "2.0.0"),), "yaml": (("pyyaml", "6.0"),), "pandas": (
    ("numpy", "2.0.0"), ("pandas", "2.2.0"), ("python-dateutil", "2.9.0"), ("six", "1.16.0"))}


def plan() -> Plan:
    array = Transfer("x", "load", "numpy", "numpy.ndarray", "Dataset")
    table = Transfer("table", "frame", "dill", "builtins.dict", "Artifact")
    steps = {
        "load": StepPlan("load", ("import numpy as np\nx = np.arange(3)",), (), (), (), (array,), ()),
        "frame": StepPlan("frame", ("import pandas as pd\ntable = {'f': pd.DataFrame({'x': x})}",), ("load",), (),
                          (array,), (table,), ()),
        "total": StepPlan("total", ("s = float(x.sum())",), ("load",), (), (array,), (), ()),
        "show": StepPlan("show", ("n = len(table['f'])",), ("frame",), (), (table,), (), ()),
        "dump": StepPlan("dump", ("import yaml\ndoc = yaml.safe_dump([1])",), (), (), (), (), ()),
        "dynamic": StepPlan("dynamic", ("m = __import__('ya' + 'ml')",), (), (), (), (), ()),
    }
    return Plan(pipeline="archives", steps=steps, parameters={})


def requirements(plan, step, opts, runtime=True):
    """The modules each step's code names, pinned (no kernel: fixed pins), plus the runtime's when asked."""
    from kale_magic.cache.keys import imported_modules

    pins = {p for module in imported_modules(step.cells) for p in PINS.get(module, ())}
    pins |= {("numpy", "2.0.0")} if any(t.backend == "numpy" for t in (*step.inputs, *step.outputs)) else set()
    if runtime:
        pins |= {("dill", "0.4.0"), ("ipython", "9.0.0"), ("prompt-toolkit", "3.0.0")}
    return Requirements(tuple(sorted(pins)))


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    from kale_magic.engines.kfp import setup as kfp_setup

    with pytest.MonkeyPatch.context() as monkeypatch:
        fix_runtime(monkeypatch)
        monkeypatch.setattr(kfp_setup, "_requirements", requirements)
        path = compile_pipeline(plan(), tmp_path_factory.mktemp("archives") / "p.yaml")
    return next(yaml.safe_load_all(path.read_text()))


def archives_of(spec, task: str) -> set[str]:
    """The archives a task's executor takes as inputs (its component's and its task's own view)."""
    tasks = spec["root"]["dag"]["tasks"]
    given = {name for name in tasks[task]["inputs"]["artifacts"] if name.startswith(ARCHIVE_INPUT)}
    component = spec["components"][tasks[task]["componentRef"]["name"]]
    declared = {name for name in component["inputDefinitions"]["artifacts"] if name.startswith(ARCHIVE_INPUT)}
    assert given == declared
    assert "kale_environment" in tasks[task]["inputs"]["artifacts"]
    return {name[len(ARCHIVE_INPUT):] for name in given}


def test_the_environment_has_one_output_per_distribution_besides_the_runtime_groups_folder(compiled):
    outputs = compiled["components"]["comp-kale-environment"]["outputDefinitions"]["artifacts"]
    # prompt_toolkit, of the step runtime's closure, is in the runtime group's folder
    assert set(outputs) == {"environment", *(ARCHIVE_INPUT + a for a in (
        "numpy", "pandas", "python_dateutil", "pyyaml", "six"))}


def test_each_step_takes_only_the_archives_of_its_own_requirements(compiled):
    assert archives_of(compiled, "load") == {"numpy"}
    assert archives_of(compiled, "total") == {"numpy"}  # its numpy backend's value
    assert archives_of(compiled, "frame") == {"numpy", "pandas", "python_dateutil", "six"}
    assert archives_of(compiled, "dump") == {"pyyaml"}


def test_a_pickled_value_brings_the_archives_of_the_step_that_made_it(compiled):
    """show's code imports nothing, but its dill value holds a DataFrame: frame's archives come with it."""
    assert archives_of(compiled, "show") == archives_of(compiled, "frame")


def test_a_step_whose_imports_cannot_be_known_takes_every_archive_and_says_why(compiled):
    outputs = compiled["components"]["comp-kale-environment"]["outputDefinitions"]["artifacts"]
    everything = {a[len(ARCHIVE_INPUT):] for a in outputs if a.startswith(ARCHIVE_INPUT)}
    assert archives_of(compiled, "dynamic") == everything
    command = compiled["deploymentSpec"]["executors"]["exec-dynamic"]["container"]["command"]
    assert json.loads(command[3])["whole"] == "its code calls __import__"
    assert json.loads(compiled["deploymentSpec"]["executors"]["exec-load"]["container"]["command"][3])["whole"] == ""


def test_a_pickled_value_of_such_a_step_means_every_archive_too():
    from kale_magic.engines.kfp import setup as kfp_setup
    from kale_magic.engines.kfp.compiler import CompileOptions

    made = Transfer("m", "dynamic", "dill", "builtins.object", "Artifact")
    steps = dict(plan().steps)
    steps["dynamic"] = StepPlan("dynamic", ("m = __import__('ya' + 'ml')",), (), (), (), (made,), ())
    steps["use"] = StepPlan("use", ("v = m.__name__",), ("dynamic",), (), (made,), (), ())
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(kfp_setup, "_requirements", requirements)
        setup = kfp_setup.plan_setup(Plan(pipeline="p", steps=steps, parameters={}), CompileOptions())
    assert setup.whole["use"] == ("it loads a value of step 'dynamic', which takes every archive: its code calls "
                                  "__import__")
    everything = setup.environments[CompileOptions().base_image].archives
    assert setup.receives["use"] == setup.receives["dynamic"] == everything


def test_a_partial_runs_pickled_value_from_an_earlier_run_means_every_archive():
    """With --from/--only, a producer left out of the pipeline is not in its plan: its value's classes are unknown."""
    from kale_magic.engines.kfp import setup as kfp_setup
    from kale_magic.engines.kfp.compiler import CompileOptions

    steps = {name: step for name, step in plan().steps.items() if name in ("show", "dump", "load")}
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(kfp_setup, "_requirements", requirements)
        setup = kfp_setup.plan_setup(Plan(pipeline="p", steps=steps, parameters={}), CompileOptions())
    assert setup.whole == {"show": "it loads a pickled value that step 'frame' of an earlier run made"}
    assert setup.receives["show"] == setup.environments[CompileOptions().base_image].archives
    assert setup.receives["load"] == ("numpy",) and setup.receives["dump"] == ("pyyaml",)


def test_every_container_spec_stays_under_the_drivers_limit(compiled):
    assert max(len(spec) for spec in container_specs(compiled).values()) < SPEC_LIMIT


def test_a_module_of_the_notebooks_folder_means_every_archive(tmp_path):
    from kale_magic.engines.kfp import setup as kfp_setup
    from kale_magic.engines.kfp.compiler import CompileOptions

    (tmp_path / "helpers.py").write_text("import yaml\n")
    steps = {"use": StepPlan("use", ("import helpers\nv = helpers.__name__",), (), (), (), (), ())}
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(kfp_setup, "_requirements", requirements)
        setup = kfp_setup.plan_setup(Plan(pipeline="p", steps=steps, parameters={}), CompileOptions(workspace=tmp_path))
    assert setup.whole == {"use": "its code imports the notebook folder's module 'helpers'"}


@pytest.mark.parametrize("code, reason", [
    ("m = __import__('ya' + 'ml')", "its code calls __import__"),
    ("import importlib\nm = importlib.import_module(name)", "its code calls import_module"),
    ("exec(text)", "its code calls exec"),
    ("%matplotlib inline\nx = 1", "its code calls run_line_magic"),
    ("import yaml\nif x\n    pass", "its cell starting 'import yaml' does not parse (expected ':')"),
    ("y = model.eval()", ""),  # a method, not the builtin
    ("import numpy as np\nx = np.eval if False else 1", ""),
])
def test_what_makes_a_steps_imports_unknown(code, reason):
    from kale_magic.engines.kfp.setup import unknown_imports

    step = StepPlan("s", (code,), (), (), (), (), ())
    assert unknown_imports(Plan(pipeline="p", steps={"s": step}, parameters={}), step, None) == reason


@pytest.mark.parametrize("received", [True, False])
def test_the_step_preamble_unpacks_a_received_archive_on_import_and_names_the_fix_for_another(tmp_path, received):
    """STEP_PREAMBLE, run as a step runs it: an archive the step received is unpacked when first imported; one
    it did not receive fails the import as it would without it, and the log says how to get it."""
    import io
    import subprocess
    import sys
    import tarfile
    import textwrap

    from kale_magic.engines.kfp.bootstrap import STEP_PREAMBLE

    folder, env = tmp_path / "environment", tmp_path / "unpacked"
    folder.mkdir()
    env.mkdir()
    (folder / "modules.json").write_text(json.dumps({"kale_fake_mod": ["fake_dist"]}))
    with tarfile.open(tmp_path / "fake_dist.tar", "w") as tar:
        content = b"VALUE = 42\n"
        info = tarfile.TarInfo("kale_fake_mod.py")
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    archives = {"fake_dist": str(tmp_path / "fake_dist.tar")} if received else {}
    code = textwrap.dedent(STEP_PREAMBLE) + "import kale_fake_mod\nprint(kale_fake_mod.VALUE)\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env={
        "PATH": "/usr/bin:/bin", "PYTHONPATH": str(env), "KALE_ENVIRONMENT": str(env),
        "KALE_ARCHIVES": json.dumps(archives), "KALE_INDEX": str(folder / "modules.json"), "KALE_UNPACKED": "[]"})
    if received:
        assert result.returncode == 0 and result.stdout == "42\n", result.stderr
    else:
        assert "ModuleNotFoundError: No module named 'kale_fake_mod'" in result.stderr
        assert ("kale-magic: this step imports kale_fake_mod from fake_dist, which its code does not import by name, "
                "so the step did not receive it: import it in the step's cells or in %%imports") in result.stderr


def _module_archive(path, module: str, filler: int, extra: dict | None = None) -> None:
    """A tar holding ``module``.py (``VALUE = 42``), ``filler`` bytes of other data and the ``extra`` files."""
    import io
    import tarfile

    files = {f"{module}.py": b"VALUE = 42\n", f"{module}_data.bin": os.urandom(filler), **(extra or {})}
    with tarfile.open(path, "w") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(content), 0o644
            tar.addfile(info, io.BytesIO(content))


@pytest.mark.parametrize("volume, limit, where, background, bg_in, late_in", [
    ("64m", None, "in memory", 64 << 10, "/kale-unpacked/", "/kale-unpacked/"),  # everything fits
    ("1m", None, "on disk (more than the memory volume holds)", 64 << 10, "/tmp/", "/tmp/"),  # the start's does not
    ("3m", None, "in memory", 64 << 10, "/kale-unpacked/", "/tmp/"),  # the one imported later does not: on disk
    ("3m", None, "in memory", 2 << 20, "/tmp/", "/tmp/"),  # nor the one unpacking in the background
    # a memory limit the compile did not know (a LimitRange's default) that cannot hold the files twice over
    ("64m", "96m", "on disk (the pod's memory limit, 96 MiB, cannot hold its 64 MiB and as much again for its code)",
     64 << 10, "/tmp/", "/tmp/"),
])
def test_a_step_unpacks_into_its_memory_volume_and_on_disk_what_does_not_fit(base_image, docker_client, tmp_path,
                                                                             volume, limit, where, background, bg_in,
                                                                             late_in):
    """STEP_BOOTSTRAP and STEP_PREAMBLE as a step runs them, in a container of the stock image with a tmpfs at
    the memory volume's path (what a ``medium: Memory`` emptyDir of that size is): the archives unpack into
    it, and where it is fuller than the compile estimated, on disk instead; the step's imports work either way
    and its log says where. The archive of the step's own import (``bg``) unpacks in the background, out of
    sight until kale-magic settles it (as component.py does before the step's code); the .pth files of both the
    archives that come later are processed as site processed those unpacked at start."""
    import textwrap

    from kale_magic.engines.kfp.bootstrap import STEP_BOOTSTRAP, STEP_PREAMBLE
    from kale_magic.engines.kfp.footprint import UNPACK_MOUNT

    folder = tmp_path / "kale_environment"
    folder.mkdir(parents=True)
    _module_archive(folder / "start.tar", "kale_start_mod", 2 << 20)
    _module_archive(folder / "bg.tar", "kale_bg_mod", background,
                    {"kale_bg.pth": b"kale_bg_extra\n", "kale_bg_extra/kale_bg_extra_mod.py": b"VALUE = 7\n"})
    _module_archive(tmp_path / "late.tar", "kale_late_mod", 2 << 20,
                    {"kale_late.pth": b"kale_late_extra\n", "kale_late_extra/kale_late_extra_mod.py": b"VALUE = 9\n"})
    (folder / "modules.json").write_text(json.dumps({"kale_start_mod": ["start"], "kale_late_mod": ["late"],
                                                     "kale_bg_mod": ["bg"], "kale_bg": ["bg"], "kale_late": ["late"]}))
    for path in (tmp_path, folder, *tmp_path.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)
    inputs = {"kale_environment": {"artifacts": [{"uri": "/in/kale_environment"}]},
              "kale_env_late": {"artifacts": [{"uri": "/in/late.tar"}]}}
    executor_input = json.dumps({"inputs": {"artifacts": inputs}})
    step = textwrap.dedent(STEP_PREAMBLE) + textwrap.dedent("""\
        import os, sys
        import kale_start_mod
        hidden = not os.path.exists(os.path.join(os.environ["KALE_ENVIRONMENT"], "kale_bg_mod.py"))
        for finder in sys.meta_path:
            getattr(finder, "settle", lambda: None)()
        import kale_bg_extra_mod, kale_bg_mod, kale_late_mod
        import kale_late_extra_mod
        print(hidden, kale_bg_extra_mod.VALUE + kale_late_extra_mod.VALUE, kale_start_mod.__file__,
              kale_bg_mod.__file__, kale_late_mod.__file__, kale_late_mod.VALUE)
        """)
    plan = json.dumps({"unpack": ["start", "bg"], "later": ["bg"], "whole": "", "memory": UNPACK_MOUNT,
                       "size": 64 << 20, "disk": ""})
    logs = docker_client.containers.run(
        base_image, ["python3", "-c", STEP_BOOTSTRAP, plan, "python3", "-c", step, "--executor_input", executor_input],
        volumes={str(tmp_path): {"bind": "/in", "mode": "ro"}}, tmpfs={UNPACK_MOUNT: f"size={volume},exec,mode=1777"},
        user="65534:0", remove=True, stdout=True, stderr=True, **({"mem_limit": limit} if limit else {})).decode()
    assert f"received 3 archives of the environment, unpacked 1 {where} in " in logs, logs
    assert "s: start; bg in the background" in logs, logs
    hidden, extra, start, bg, late, value = logs.strip().splitlines()[-1].split()
    assert hidden == "True" and extra == "16", logs  # out of sight until settled; .pth files processed
    assert start.startswith(UNPACK_MOUNT + "/" if where == "in memory" else "/tmp/"), logs
    assert bg.startswith(bg_in) and late.startswith(late_in) and value == "42", logs
