"""Plan → KFP v2 YAML: golden files, strict protobuf parsing, references, options, names."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kfp_plans import three_step_plan

from kale_magic.engines.kfp.compiler import (CompileOptions, Names, compile_pipeline, default_pipeline_file, k8s_name,
                                 pipeline_arguments)
from kale_magic.errors import ValidationError
from kale_magic.engines.kfp.component import decode
from kale_magic.plan.model import Plan, StepPlan, Transfer

GOLDEN = Path(__file__).parent / "golden"
OPTIONS = dict(volumes=("data-pvc:/data",), secrets=("db-creds:password=DB_PASSWORD,user",))


def load(path):
    return list(yaml.safe_load_all(Path(path).read_text()))


@pytest.fixture
def fixed_runtime(monkeypatch):
    fix_runtime(monkeypatch)


def fix_runtime(monkeypatch):
    """A stand-in kale-magic wheel and fixed pins, so the golden file does not change with every edit of
    kale-magic's code or every upgrade of a library in this environment."""
    from kale_magic.engines.kfp import footprint as kfp_footprint
    from kale_magic.engines.kfp import setup as kfp_setup
    from kale_magic.engines.kfp import wheel as kfp_wheel
    from kale_magic.engines.kfp.requirements import Requirements

    monkeypatch.setattr(kfp_wheel, "wheel_bytes", lambda package=None: b"a wheel")
    monkeypatch.setattr(kfp_setup, "runtime_version", lambda package=None: "0.1.0+k000000000000")
    def requirements(plan, step, opts, runtime=True):  # runtime False: only what the step's code imports
        if step.name != "load":
            return Requirements((("dill", "0.4.0"),) if runtime else ())
        return Requirements((("ipython", "9.0.0"), ("numpy", "2.0.0"), ("prompt-toolkit", "3.0.0")) if runtime
                            else (("numpy", "2.0.0"),))

    monkeypatch.setattr(kfp_setup, "_requirements", requirements)
    # every distribution 10 MiB installed: the steps' memory volumes do not depend on this machine's versions
    monkeypatch.setattr(kfp_footprint, "installed_bytes", lambda name, version: 10 << 20)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """Compiled once for the tests that only read it: kfp's compiler takes seconds."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        fix_runtime(monkeypatch)
        path = compile_pipeline(three_step_plan(), tmp_path_factory.mktemp("compiled") / "p.yaml", **OPTIONS)
    spec, platform = load(path)
    return path, spec, platform


def test_matches_golden_file(compiled):
    """Regenerate with KALE_REGEN_GOLDEN=1 after an intended change (or a kfp upgrade).

    Last regenerated when steps began to install what they import: the kale-environment tasks (one per
    image), their input to every step, kfp's runtime install, and pods running as a non-root user.
    """
    path, _, _ = compiled
    golden = GOLDEN / "three_step.yaml"
    if os.environ.get("KALE_REGEN_GOLDEN") == "1":
        golden.write_bytes(path.read_bytes())
    assert path.read_bytes() == golden.read_bytes(), "YAML differs from the golden file (KALE_REGEN_GOLDEN=1 accepts)"


def test_same_plan_compiles_byte_identical(tmp_path, fixed_runtime):
    first = compile_pipeline(three_step_plan(), tmp_path / "a.yaml", **OPTIONS)
    second = compile_pipeline(three_step_plan(), tmp_path / "b.yaml", **OPTIONS)
    assert first.read_bytes() == second.read_bytes()


def test_kfps_stack_inspection_sees_only_the_compile_not_the_notebooks_frames(tmp_path, fixed_runtime, monkeypatch):
    """kfp's task setters call inspect.stack(), which reads the source of every frame on the stack; a
    notebook's cells and IPython's frames would each cost a scan of sys.modules (seconds per compile in a
    kernel with torch loaded), so the compile runs on a stack of its own."""
    import inspect

    depths, stack = [], inspect.stack

    def counting_stack(context=1):
        frames = stack(context)
        depths.append([f.filename for f in frames[1:]])  # [0]: this function
        return frames

    monkeypatch.setattr(inspect, "stack", counting_stack)
    cell = "def cell(n, compile):\n    return compile() if n == 0 else cell(n - 1, compile)\n"
    namespace = {}
    exec(compile(cell, "<ipython-input-7-cell>", "exec"), namespace)  # a notebook cell, 30 frames deep
    namespace["cell"](30, lambda: compile_pipeline(three_step_plan(), tmp_path / "a.yaml", **OPTIONS))
    assert depths, "kfp no longer inspects the stack: this test and the compile's thread can go"
    assert all("<ipython-input-7-cell>" not in filenames for filenames in depths)
    assert all(__file__ not in filenames for filenames in depths)


def test_parses_strictly_into_pipeline_and_platform_specs(compiled):
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    _, spec, platform = compiled
    parsed = json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec())
    assert parsed.pipeline_info.name == "demo-pipeline"
    platform_spec = json_format.ParseDict(platform, pipeline_spec_pb2.PlatformSpec())
    assert set(platform_spec.platforms) == {"kubernetes"}


def test_no_dangling_references(compiled):
    _, spec, platform = compiled
    components, executors = spec["components"], spec["deploymentSpec"]["executors"]
    tasks = spec["root"]["dag"]["tasks"]
    root_params = spec["root"]["inputDefinitions"]["parameters"]
    for comp in components.values():
        assert comp["executorLabel"] in executors
    for task in tasks.values():
        component = components[task["componentRef"]["name"]]
        assert set(task.get("dependentTasks", [])) <= set(tasks)
        wanted = component.get("inputDefinitions", {})
        given = task.get("inputs", {})
        assert set(given.get("parameters", {})) == set(wanted.get("parameters", {}))
        assert set(given.get("artifacts", {})) == set(wanted.get("artifacts", {}))
        for param in given.get("parameters", {}).values():
            assert param.get("componentInputParameter", "uri") in root_params or "runtimeValue" in param
        for artifact in given.get("artifacts", {}).values():
            ref = artifact["taskOutputArtifact"]
            producer = components[tasks[ref["producerTask"]]["componentRef"]["name"]]
            assert ref["outputArtifactKey"] in producer["outputDefinitions"]["artifacts"]
            assert ref["producerTask"] in task["dependentTasks"]
    assert set(platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]) <= set(executors)


def test_parameters_are_typed_and_passed_only_to_readers(compiled):
    _, spec, _ = compiled
    root = spec["root"]["inputDefinitions"]["parameters"]
    assert {k: v["parameterType"] for k, v in root.items()} == {
        "n": "NUMBER_INTEGER", "scale": "NUMBER_DOUBLE", "cfg": "STRING", "flag": "BOOLEAN"}
    assert root["cfg"]["defaultValue"] == "{'layers': [3, 2], 'name': 'm'}"
    comps = spec["components"]
    assert set(comps["comp-load"]["inputDefinitions"]["parameters"]) == {"n", "scale"}
    assert set(comps["comp-train"]["inputDefinitions"]["parameters"]) == {"cfg", "n"}
    assert set(comps["comp-report"]["inputDefinitions"]["parameters"]) == {"flag"}


def test_each_value_is_a_typed_artifact_with_report_and_metrics(compiled):
    _, spec, _ = compiled
    comps = spec["components"]

    def kinds(defs):
        return {k: v["artifactType"]["schemaTitle"] for k, v in defs.get("artifacts", {}).items()}

    assert kinds(comps["comp-load"]["outputDefinitions"]) == {"x": "system.Dataset", "kale_report": "system.HTML"}
    assert kinds(comps["comp-train"]["inputDefinitions"]) == {"in_x": "system.Dataset",
                                                              "kale_environment": "system.Artifact"}
    assert kinds(comps["comp-train"]["outputDefinitions"]) == {
        "model": "system.Model", "kale_report": "system.HTML", "kale_metrics": "system.Metrics"}
    assert kinds(comps["comp-report"]["inputDefinitions"]) == {"in_model": "system.Model",
                                                               "kale_environment": "system.Artifact"}


def test_step_options_are_applied(compiled):
    _, spec, platform = compiled
    executors = spec["deploymentSpec"]["executors"]
    resources = executors["exec-train"]["container"]["resources"]
    assert resources["resourceCpuRequest"] == resources["resourceCpuLimit"] == "500m"
    assert resources["resourceMemoryRequest"] == resources["resourceMemoryLimit"] == "1Gi"
    assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert resources["accelerator"]["resourceCount"] == "1"
    # load sets none: it requests only the memory its environment's volume takes (test_kfp_footprint)
    assert set(executors["exec-load"]["container"]["resources"]) == {"memoryRequest", "resourceMemoryRequest"}
    assert executors["exec-report"]["container"]["image"] == "registry.example/kale:1"
    assert executors["exec-load"]["container"]["image"] == "python:%d.%d" % sys.version_info[:2]
    tasks = spec["root"]["dag"]["tasks"]
    assert tasks["train"]["retryPolicy"]["maxRetryCount"] == 2
    assert tasks["train"]["cachingOptions"] == {}
    assert tasks["load"]["cachingOptions"] == {"enableCache": True}
    assert "retryPolicy" not in tasks["load"]
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert k8s["exec-train"]["activeDeadlineSeconds"] == "600"
    assert "activeDeadlineSeconds" not in k8s["exec-load"]
    for executor in ("exec-load", "exec-train", "exec-report"):
        assert k8s[executor]["securityContext"] == {"runAsUser": "65534", "runAsGroup": "0", "runAsNonRoot": True}
        assert {"name": "HOME", "value": "/tmp/kale-home"} in executors[executor]["container"]["env"]
        assert k8s[executor]["pvcMount"][0]["mountPath"] == "/data"
        assert k8s[executor]["pvcMount"][0]["constant"] == "data-pvc"
        secret = k8s[executor]["secretAsEnv"][0]
        assert secret["secretName"] == "db-creds"
        assert secret["keyToEnv"] == [{"secretKey": "password", "envVar": "DB_PASSWORD"},
                                      {"secretKey": "user", "envVar": "user"}]


def test_pipeline_options(tmp_path):
    path = compile_pipeline(three_step_plan(), tmp_path / "p.yaml", base_image="my/image:2", caching=False,
                            accelerator="amd.com/gpu", packages=("scikit-learn==1.5",), install_packages=False,
                            run_as_user=None)
    spec, platform = load(path)
    executors = spec["deploymentSpec"]["executors"]
    assert executors["exec-load"]["container"]["image"] == "my/image:2"
    assert executors["exec-train"]["container"]["resources"]["accelerator"]["resourceType"] == "amd.com/gpu"
    assert all("cachingOptions" not in t or t["cachingOptions"] == {} for t in spec["root"]["dag"]["tasks"].values())
    command = " ".join(executors["exec-load"]["container"]["command"])
    assert "scikit-learn==1.5" in command and "kfp==" not in command
    assert spec["pipelineInfo"] == {"name": "demo-pipeline", "description": "A demo pipeline"}
    assert set(spec["root"]["dag"]["tasks"]) == {"load", "train", "report"}  # the image holds everything
    assert "securityContext" not in str(platform)


def test_steps_install_once_per_run_in_an_environment_task_per_image(compiled):
    _, spec, _ = compiled
    tasks, executors = spec["root"]["dag"]["tasks"], spec["deploymentSpec"]["executors"]
    assert {t: tasks[t]["componentRef"]["name"] for t in tasks if t.startswith("kale-environment")} == {
        "kale-environment": "comp-kale-environment", "kale-environment-2": "comp-kale-environment-2"}
    producer = {step: tasks[step]["inputs"]["artifacts"]["kale_environment"]["taskOutputArtifact"]["producerTask"]
                for step in ("load", "train", "report")}
    assert producer == {"load": "kale-environment", "train": "kale-environment", "report": "kale-environment-2"}
    environment = executors["exec-kale-environment"]["container"]
    source = " ".join(environment["command"] + environment["args"])
    import kfp

    # load's and train's pins, merged, and kfp's runtime for the steps' executors
    assert f"'dill==0.4.0', 'ipython==9.0.0', 'kfp=={kfp.__version__}', 'numpy==2.0.0'" in source
    assert "kale-magic==0.1.0+k000000000000" in source
    assert {e["name"] for e in environment["env"]} == {"HOME"}  # nothing of ours in a container spec
    runtime = tasks["kale-environment"]["inputs"]["artifacts"]["kale_runtime"]["taskOutputArtifact"]["producerTask"]
    assert tasks[runtime]["componentRef"]["name"].startswith("comp-importer")
    for step in ("load", "train", "report"):  # ... so a step installs nothing: it unpacks, then runs kfp's executor
        command = executors[f"exec-{step}"]["container"]["command"]
        assert command[:2] == ["python3", "-c"] and "KALE_ENVIRONMENT" in command[2]
        assert "pip install" not in " ".join(command)
    assert executors["exec-kale-environment-2"]["container"]["image"] == "registry.example/kale:1"


def test_a_step_unpacks_at_start_what_its_code_and_the_runtime_load_and_the_rest_on_import(compiled):
    """load's code imports numpy; IPython's prompt_toolkit, installed for it, is left packed until imported
    (STEP_PREAMBLE's finder); the archives are uncompressed tars (a step's unpack is its CPU, not gzip's)."""
    _, spec, _ = compiled
    executors = spec["deploymentSpec"]["executors"]
    unpacks = {step: json.loads(executors[f"exec-{step}"]["container"]["command"][3])["unpack"]
               for step in ("load", "train")}
    runtime = ["_common", "kfp", "kale_magic", "ipython", "ipython_pygments_lexers", "pygments", "traitlets", "dill",
               "xxhash"]
    assert unpacks == {"load": runtime + ["numpy"], "train": runtime}
    environment = " ".join(executors["exec-kale-environment"]["container"]["command"])
    assert "'prompt-toolkit==3.0.0'" in environment and 'name + ".tar"), "w"' in environment
    # load takes numpy's archive (an output of its own), train none: each the runtime group's folder
    tasks = spec["root"]["dag"]["tasks"]
    assert {step: sorted(tasks[step]["inputs"]["artifacts"]) for step in ("load", "train")} == {
        "load": ["kale_env_numpy", "kale_environment"], "train": ["in_x", "kale_environment"]}


def test_pip_index_urls_reach_every_install(tmp_path, fixed_runtime):
    """Kale.pip_index_urls: the environment task's pinned install and its kfp runtime install use them (the
    steps install nothing); a plain-http index is a trusted host."""
    urls = ("https://pypi.internal/simple", "http://mirror.internal:8080/simple")
    spec = load(compile_pipeline(three_step_plan(), tmp_path / "p.yaml", pip_index_urls=urls))[0]
    executors = spec["deploymentSpec"]["executors"]
    environment = " ".join(executors["exec-kale-environment"]["container"]["command"])
    assert ("'--index-url', 'https://pypi.internal/simple', '--extra-index-url', "
            "'http://mirror.internal:8080/simple', '--trusted-host', 'mirror.internal'") in environment
    for label in ("exec-kale-environment", "exec-kale-environment-2"):
        command = " ".join(executors[label]["container"]["command"])
        assert "--index-url https://pypi.internal/simple" in command and "kfp==" in command


def test_a_python_image_of_another_version_is_refused(tmp_path):
    other = "python:3.9-slim" if sys.version_info[:2] != (3, 9) else "python:3.10-slim"
    with pytest.raises(ValidationError, match=r"Step 'load' would run on docker.io/library/python:3"):
        compile_pipeline(three_step_plan(), tmp_path / "p.yaml", base_image=f"docker.io/library/{other}")
    assert not (tmp_path / "p.yaml").exists()


def test_default_file_is_under_dot_kale_next_to_the_notebook(tmp_path, fixed_runtime):
    plan = three_step_plan(notebook_path=tmp_path / "nb" / "train.ipynb")
    assert default_pipeline_file(plan) == tmp_path / "nb" / ".kale" / "pipelines" / "demo-pipeline.yaml"
    assert compile_pipeline(plan).is_file()


@pytest.mark.parametrize("text, expected", [
    ("Demo Pipeline", "demo-pipeline"),
    ("load_data", "load-data"),
    ("  __x__ ", "x"),
    ("2nd step", "kale-2nd-step"),
    ("Ünïcode!", "n-code"),
    ("", "kale"),
    ("a" * 80, "a" * 63),
])
def test_k8s_names(text, expected):
    assert k8s_name(text) == expected


def test_colliding_and_reserved_names_are_made_unique(tmp_path, fixed_runtime):
    big, small = Transfer("X", "a_b", "json", "builtins.int"), Transfer("x", "a_b", "json", "builtins.int")
    steps = {
        "a_b": StepPlan("a_b", ("X = 1\nx = 2",), (), (), (), (big, small), ()),
        "a-b": StepPlan("a-b", ("kale_report = X + x",), ("a_b",), (), (big, small),
                        (Transfer("kale_report", "a-b", "json", "builtins.int"),), ()),
        "import": StepPlan("import", ("print(kale_report)",), ("a-b",), (), (
            Transfer("kale_report", "a-b", "json", "builtins.int"),), (), ()),
    }
    plan = Plan("p", steps)
    names = Names(plan)
    assert names.tasks == {"a_b": "a-b", "a-b": "a-b-2", "import": "v-import"}
    assert Names(Plan("p", {"kale_environment": steps["a_b"]})).tasks == {"kale_environment": "kale-environment-s"}
    assert Names(Plan("p", {"importer": steps["a_b"]})).tasks == {"importer": "importer-s"}  # kfp's importer tasks
    assert Names.io(steps["a_b"]) == {("out", "X"): "x", ("out", "x"): "x_2"}
    assert Names.io(steps["a-b"])[("out", "kale_report")] == "kale_report_2"
    spec = load(compile_pipeline(plan, tmp_path / "p.yaml"))[0]
    assert set(spec["root"]["dag"]["tasks"]) == {"a-b", "a-b-2", "v-import", "kale-environment", "importer"}
    assert spec["root"]["dag"]["tasks"]["v-import"]["taskInfo"]["name"] == "import"


def test_pipeline_arguments_send_other_values_as_literal_text():
    plan = three_step_plan()
    args = pipeline_arguments(plan, {"n": 7, "cfg": {"layers": [1]}})
    assert args == {"n": 7, "scale": 1.5, "cfg": "{'layers': [1]}", "flag": True}


@pytest.mark.parametrize("value", [[3, 2], {"b": 1, "a": (1, 2)}, (1,), None, {1, 2}, [[1.5, True, None]]])
def test_text_parameters_round_trip_exactly(value):
    text = pipeline_arguments(Plan("p", {}, parameters={"v": value}), {})["v"]
    decoded = decode(text)
    assert decoded == value and repr(decoded) == repr(value)


def test_json_typed_in_the_kfp_ui_is_accepted():
    assert decode('{"on": true, "ids": [1, 2], "x": null}') == {"on": True, "ids": [1, 2], "x": None}


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(volumes=("no-mount",)), "PVC_NAME:/mount/path"),
    (dict(volumes=("pvc:relative",)), "PVC_NAME:/mount/path"),
    (dict(secrets=("only-name",)), "SECRET_NAME:KEY=ENV_VAR"),
])
def test_bad_pipeline_options_are_clear_errors(kwargs, fragment):
    with pytest.raises(ValidationError, match=fragment.replace(":", ".")):
        CompileOptions(**kwargs)


def test_importing_the_compiler_does_not_import_kfp():
    code = "import sys, kale_magic.engines.kfp.compiler, kale_magic.engines.kfp.engine; print('kfp' in sys.modules)"
    root = Path(__file__).parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_an_executor_spec_over_the_drivers_argument_is_refused_with_the_step_named(tmp_path, fixed_runtime,
                                                                                  monkeypatch):
    """The guard measures the container spec as the driver receives it: Go JSON, where '<' is six bytes."""
    from kale_magic.engines.kfp import setup as kfp_setup

    monkeypatch.setattr(kfp_setup, "EMBED_LIMIT", 10**9)  # embed everything: only the guard stands
    code = "".join(f"ok = {i} < {i + 1}  # <&>\n" for i in range(5000))  # ~110 KB, ~170 KiB as Go JSON
    plan = Plan("p", {"big": StepPlan("big", (code,), (), (), (), (), ())})
    with pytest.raises(ValidationError, match=r"The container spec of step 'big' is \d+ KiB as KFP's driver "
                                              r"receives it, over the 120 KiB one command-line argument"):
        compile_pipeline(plan, tmp_path / "p.yaml", pipeline_root=str(tmp_path / "root"))
    assert not (tmp_path / "p.yaml").exists()


def test_go_json_escapes_as_the_backend_does():
    from kale_magic.engines.kfp.delivery import go_json

    assert go_json({"b": "<a & b>", "a": "é\u2028"}) == '{"a":"é\\u2028","b":"\\u003ca \\u0026 b\\u003e"}'.encode()


def test_a_large_step_notebook_travels_in_the_runtime_bundle_not_in_any_spec(tmp_path, fixed_runtime):
    import io
    import lzma
    import tarfile

    from kale_magic.engines.kfp.delivery import SPEC_LIMIT, container_specs

    code = "".join(f"v{i} = {i} < {i + 1}  # line {i}\n" for i in range(3000))  # a 3,000-line step
    plan = Plan("p", {"big": StepPlan("big", (code,), (), (), (), (), ())})
    root = tmp_path / "root"
    spec = load(compile_pipeline(plan, tmp_path / "p.yaml", pipeline_root=str(root)))[0]
    assert all(len(s) <= SPEC_LIMIT for s in container_specs(spec).values())
    executor = spec["deploymentSpec"]["executors"]["exec-big"]["container"]
    assert "notebook_file=" in executor["command"][-1] and "v2999" not in executor["command"][-1]
    (bundle,) = (root / "kale-runtime").iterdir()  # published into the folder root at once (kfp.local)
    assert str(bundle) in (tmp_path / "p.yaml").read_text()
    with tarfile.open(fileobj=io.BytesIO(lzma.decompress(bundle.read_bytes()))) as tar:
        assert sorted(tar.getnames()) == ["kale-notebooks/big.json", "kale_magic-0.1.0+k000000000000-py3-none-any.whl"]
        assert "v2999" in tar.extractfile("kale-notebooks/big.json").read().decode()


def test_index_credentials_are_refused_in_the_yaml_and_come_from_a_secret(tmp_path, fixed_runtime):
    with pytest.raises(ValidationError, match=r"credentials in https://…@pypi.internal.*Kfp.secrets"):
        compile_pipeline(three_step_plan(), tmp_path / "p.yaml", pip_index_urls=("https://me:s3cret@pypi.internal/simple",))
    assert not (tmp_path / "p.yaml").exists()
    spec, platform = load(compile_pipeline(three_step_plan(), tmp_path / "p.yaml", caching=False,
                                           secrets=("pip-index:url=PIP_INDEX_URL",), volumes=("data-pvc:/data",)))
    environment = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-kale-environment"]
    assert environment["secretAsEnv"][0]["secretName"] == "pip-index"
    assert environment["secretAsEnv"][0]["keyToEnv"] == [{"secretKey": "url", "envVar": "PIP_INDEX_URL"}]
    assert environment["pvcMount"][0]["mountPath"] == "/data"
    assert spec["root"]["dag"]["tasks"]["kale-environment"].get("cachingOptions", {}) == {}  # Kale.caching = False


def test_the_environment_task_requests_cpu_and_memory(compiled):
    _, spec, _ = compiled
    resources = spec["deploymentSpec"]["executors"]["exec-kale-environment"]["container"]["resources"]
    assert resources["resourceCpuRequest"] == "500m" and resources["resourceMemoryRequest"] == "1Gi"


# Kale.packages and Kale.pip_index_urls reach the `sh -c` command of every task -------------------------
HOSTILE_PACKAGES = ["numpy; $(touch CANARY)", "numpy`touch CANARY`", "x'; touch CANARY; '", "numpy\ntouch CANARY",
                    "foo @ https://x.example/$(touch CANARY).whl", "numpy --index-url=https://evil.example", ""]
HOSTILE_URLS = ["https://x.example/simple;touch CANARY", "https://x.example/$(touch CANARY)",
                "https://x.example/`touch CANARY`", "https://x.example/simple touch", "https://x.example/a&b",
                "https://x.example/simple\n", "file:///etc/passwd", "--index-url=https://x.example", "x.example"]


@pytest.mark.parametrize("setting, value", [("packages", v) for v in HOSTILE_PACKAGES]
                         + [("pip_index_urls", v) for v in HOSTILE_URLS])
def test_hostile_pip_settings_are_refused_in_one_sentence(setting, value):
    with pytest.raises(ValidationError, match=rf"^Kfp\.{setting}: .+: (give|not a requirement) .*\.$"):
        CompileOptions(**{setting: (value,)})


def test_pip_settings_reach_every_command_line_as_single_quoted_words(tmp_path, fixed_runtime):
    """Values a shell would act on unquoted (<, >, ;, ", [ ], ?, #, ~) but pip needs: each compiled task's
    `sh -c` command, run with stub pip and python3 in a folder where an unquoted '?' would match a file,
    hands each one to pip as one argument, unchanged."""
    packages = ('numpy>=1.0,<3', 'pkg[extra]==1', 'foo; python_version<"3.99"',
                'bar @ https://example.com/bar-1.0.whl#sha256=00')
    urls = ("https://pypi.internal/s?mple#top", "http://mirror.internal:8080/~me/[s]")
    spec = load(compile_pipeline(three_step_plan(), tmp_path / "p.yaml", packages=packages, pip_index_urls=urls))[0]
    bin_dir, record = tmp_path / "bin", tmp_path / "argv.jsonl"
    bin_dir.mkdir()
    stub = f"#!{sys.executable}\nimport json, sys\nopen({str(record)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
    for name in ("python3", "pip"):
        (bin_dir / name).write_text(stub)
        (bin_dir / name).chmod(0o755)
    work = tmp_path / "work"
    (work / "https:" / "pypi.internal" / "sample#top").mkdir(parents=True)  # what s?mple#top would glob to
    executors = spec["deploymentSpec"]["executors"]
    commands = [e["container"]["command"] for e in executors.values() if "container" in e]  # not the importers
    assert len(commands) == len([e for e in executors.values() if "importer" not in e]) >= 4
    for command in commands:
        start = command.index("sh")  # after the step's environment bootstrap (python3 -c ...), if any
        assert command[start:start + 2] == ["sh", "-c"]
        record.write_text("")
        subprocess.run(["sh", "-c", command[start + 2], "true"], cwd=work, check=True,
                       env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
        calls = [json.loads(line) for line in record.read_text().splitlines()]
        assert calls and all(call[call.index("--index-url") + 1] == urls[0] for call in calls)
        assert all(call[call.index("--extra-index-url") + 1] == urls[1] for call in calls)
        if "--no-deps" not in calls[0]:  # a step's own install of Kale.packages
            assert [arg for arg in calls[0] if arg in packages] == list(packages)
    assert [p.name for p in work.iterdir()] == ["https:"]  # nothing redirected into files


def test_pip_settings_are_checked_by_config_in_the_kernel(kernel, caplog):
    kernel.run("%config Kfp.packages = ['pandas>=2', 'numpy; $(id)']")
    kernel.run("%config Kfp.pip_index_urls = ['https://pypi.example/simple;id']")
    assert (kernel.magics.packages, kernel.magics.pip_index_urls) == ([], [])
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["Kfp.packages", "Kfp.pip_index_urls"]
    kernel.run("%config Kfp.packages = ['pandas>=2', 'torch==2.3.1; sys_platform == \"linux\"']")
    assert kernel.magics.packages == ['pandas>=2', 'torch==2.3.1; sys_platform == "linux"']
