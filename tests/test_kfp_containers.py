"""Compiled with the defaults, the YAML runs in real containers on a stock Python image.

The notebook is annotated and run in a real kernel; the plan comes from the real planner; the pipeline,
compiled with no setting at all, runs under ``kfp.local.DockerRunner`` on the local ``python:3.11`` image
(Python and pip only, tests/containers), as a non-root user, with nothing of this environment inside:
each step's container installs what it imports and this exact kale-magic. Each value the pipeline
produces must equal what the same cells produced in the kernel (the oracle), metrics and HTML reports
included.
"""

import json
from pathlib import Path

import pytest
import s3_server as s3

from kale_magic import marshal
from kale_magic.engines.kfp.compiler import compile_pipeline

s3_server, s3_env = s3.s3_server, s3.s3_env  # the fixtures

NOTEBOOK = [
    """
    %%imports
    import numpy as np
    """,
    """
    %%parameters
    n = 4
    scale = 1.5
    layers = [3, 2]
    """,
    """
    %%step load
    X = np.arange(n) * scale
    sizes = list(layers)
    """,
    """
    %%step train --cpu 1 --memory 1Gi --retries 1 --timeout 600
    total = float(X.sum())
    model = {"total": total, "sizes": sizes, "first": sizes[0]}
    acc = total / 10
    """,
    """
    %%metrics
    acc
    """,
    """
    %%step report
    print("<b>total</b>", model["total"])
    summary = f"{model['first']}:{type(model['first']).__name__}"
    """,
]


@pytest.fixture
def kfp_local(docker_pipeline_root):
    return docker_pipeline_root


def outputs(root: Path, task: str, name: str) -> Path:
    """An output of the last pipeline run (steps are compiled without caching, so they all ran in it;
    the environment task is a cache hit in every test after the first with the same pins)."""
    runs = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "kale-"))]
    return max(runs, key=lambda p: p.stat().st_mtime) / task / name


def compile_for_test(plan, path):
    """Compiled with the defaults, its steps to run again (``--no-cache``: the environment task, a function
    of its pins, is reused), the runtime bundle published into kfp.local's root (a folder, where the
    importer reads it); every executor spec passes the driver's real argv."""
    from containers import driver_argv

    path = compile_pipeline(plan, path, rerun=True, pipeline_root=local_root())
    driver_argv(path)
    return path


def local_root() -> str:
    from kfp.local import config

    return config.LocalExecutionConfig.instance.pipeline_root


def recorded_plan(kernel, cells=NOTEBOOK):
    kernel.cells(*cells)
    return kernel.magics.plan()


def test_the_driver_argv_rig_fails_as_the_kernel_does():
    """The rig's exec is real: an argument over 128 KiB fails like Argo's "argument list too long"."""
    import errno
    import subprocess

    with pytest.raises(OSError) as raised:
        subprocess.run(["/bin/true", "--container", "x" * (128 * 1024 + 1)])
    assert raised.value.errno == errno.E2BIG


def test_compiled_yaml_runs_unchanged_under_kfp_local(kernel, kfp_local, tmp_path):
    from kfp import components

    plan = recorded_plan(kernel)
    path = compile_for_test(plan, tmp_path / "pipeline.yaml")
    pipeline = components.load_component_from_file(str(path))
    pipeline()

    for step in plan.steps.values():  # the oracle: every value equals the kernel's
        for transfer in step.outputs:
            value = marshal.load(outputs(kfp_local, step.name, transfer.name.lower()))
            expected = kernel.ns[transfer.name]
            assert json.dumps(value, default=list) == json.dumps(expected, default=list), transfer.name
    assert marshal.load(outputs(kfp_local, "train", "model"))["first"] == 3  # an int stays an int

    metadata = json.loads(outputs(kfp_local, "train", "executor_output.json").read_text())["artifacts"]
    (metrics,) = metadata["kale_metrics"]["artifacts"]
    assert metrics["metadata"] == {"acc": kernel.ns["acc"]}
    (model,) = metadata["model"]["artifacts"]
    assert model["metadata"]["backend"] == plan.steps["train"].outputs[0].backend

    report = outputs(kfp_local, "report", "kale_report").read_text()
    assert "&lt;b&gt;total&lt;/b&gt; 9.0" in report  # the printed output, escaped
    assert "print(&quot;&lt;b&gt;total&lt;/b&gt;&quot;" in report


def test_parameters_reach_the_steps_with_their_types(kernel, kfp_local, tmp_path):
    from kfp import components

    plan = recorded_plan(kernel)
    path = compile_for_test(plan, tmp_path / "pipeline.yaml")
    pipeline = components.load_component_from_file(str(path))
    pipeline(n=2, layers=json.dumps([7, 5]))
    assert marshal.load(outputs(kfp_local, "load", "x")).tolist() == [0.0, 1.5]
    assert marshal.load(outputs(kfp_local, "load", "sizes")) == [7, 5]
    model = marshal.load(outputs(kfp_local, "train", "model"))
    assert model["first"] == 7 and type(model["first"]) is int


def test_a_failing_step_fails_the_kfp_task_with_its_error(kernel, kfp_local, tmp_path, capfd):
    from kfp import components

    plan = recorded_plan(kernel, NOTEBOOK[:3] + ["%%step boom\nratio = len(sizes) / (n - 3)"])
    pipeline = components.load_component_from_file(str(compile_for_test(plan, tmp_path / "pipeline.yaml")))
    with pytest.raises(RuntimeError, match="boom"):
        pipeline(n=3)
    logs = "".join(capfd.readouterr())  # kfp.local relays the task's output
    assert "step 'boom' failed: ZeroDivisionError: division by zero" in logs


def test_the_error_a_failing_step_prints_reaches_the_panel(kernel, kfp_local, tmp_path, capfd):
    """On a cluster the API has no error text: the engine reads it from the step's pod log. The log here is
    the one the step's real container printed, served by the fake API server as that pod's log."""
    from kfp import components
    from kfp_api_server import FakeKfpServer
    from kfp_plans import follow

    plan = recorded_plan(kernel, NOTEBOOK[:3] + ["%%step boom\nratio = len(sizes) / (n - 3)"])
    pipeline = components.load_component_from_file(str(compile_for_test(plan, tmp_path / "pipeline.yaml")))
    with pytest.raises(RuntimeError):
        pipeline(n=3)
    log = "".join(capfd.readouterr())
    with FakeKfpServer() as server:
        server.script_run(dict(state="FAILED", tasks={"load": "SUCCEEDED", "boom": ("FAILED", log)}))
        state = follow(server.url, tmp_path / "follow", plan=plan)
    assert state.steps["boom"].status == "failed"
    assert state.steps["boom"].message == "ZeroDivisionError: division by zero"
    assert state.error == "step 'boom' failed on Kubeflow Pipelines: ZeroDivisionError: division by zero"


SKLEARN = [
    """
    %%imports
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression
    """,
    """
    %%parameters
    seed = 3
    """,
    """
    %%step data
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200)})
    frame["label"] = (frame.a + 0.5 * frame.b > 0).astype(int)
    """,
    """
    %%step train
    model = LogisticRegression().fit(frame[["a", "b"]], frame.label)
    """,
    """
    %%step evaluate
    accuracy = float(model.score(frame[["a", "b"]], frame.label))
    """,
    """
    %%metrics
    accuracy
    """,
]


def test_a_pandas_and_scikit_learn_notebook_gives_the_kernels_values(kernel, kfp_local, tmp_path):
    from kfp import components

    plan = recorded_plan(kernel, SKLEARN)
    components.load_component_from_file(str(compile_for_test(plan, tmp_path / "pipeline.yaml")))()
    frame = marshal.load(outputs(kfp_local, "data", "frame"))
    assert frame.equals(kernel.ns["frame"]) and list(frame.dtypes) == list(kernel.ns["frame"].dtypes)
    model = marshal.load(outputs(kfp_local, "train", "model"))
    assert (model.coef_ == kernel.ns["model"].coef_).all()
    assert json.loads(outputs(kfp_local, "evaluate", "kale_metrics").read_text()) == {
        "accuracy": kernel.ns["accuracy"]}


DYNAMIC = [
    """
    %%step dump
    import yaml
    doc = yaml.safe_dump({"a": [1, 2]})
    """,
    """
    %%step read
    import os
    unpacked = os.path.isdir(os.path.join(os.environ.get("KALE_ENVIRONMENT", "/nowhere"), "yaml"))
    back = __import__("ya" + "ml").safe_load(doc)
    """,
]


def test_a_step_unpacks_only_what_it_imports_and_the_rest_when_it_imports_it(kernel, kfp_local, tmp_path):
    """The environment holds PyYAML for step dump; step read's code names no yaml import, so its bootstrap
    leaves PyYAML packed (``unpacked`` is False there, as in the kernel), and its ``__import__`` unpacks it
    then: the step gets the kernel's values."""
    from kfp import components

    plan = recorded_plan(kernel, DYNAMIC)
    components.load_component_from_file(str(compile_for_test(plan, tmp_path / "pipeline.yaml")))()
    assert marshal.load(outputs(kfp_local, "read", "unpacked")) is False
    assert marshal.load(outputs(kfp_local, "read", "back")) == kernel.ns["back"] == {"a": [1, 2]}


def test_a_later_run_reuses_the_environment_and_runs_its_steps_again(kernel, kfp_local, tmp_path):
    """KFP's cache (kfp.local's: component, image, command, arguments, environment variables) holds the
    environment task, which obeys Kfp.caching (on by default); steps compiled to run again (``--no-cache``)
    run in the second run, unpacking that environment, and give the kernel's value."""
    from kfp import components

    plan = recorded_plan(kernel, ["%%imports\nimport numpy as np", "%%step only\ntotal = float(np.arange(5).sum())"])
    pipeline = components.load_component_from_file(str(compile_for_test(plan, tmp_path / "pipeline.yaml")))
    pipeline()
    pipeline()
    last = outputs(kfp_local, "only", "total").parent.parent
    assert sorted(p.name for p in last.iterdir()) == ["only"]  # no kale-environment task ran in it
    assert marshal.load(last / "only" / "total") == kernel.ns["total"] == 10.0


def test_a_step_reads_workspace_files_from_the_snapshot(kernel, kfp_local, tmp_path, monkeypatch):
    """The snapshot travels through the pipeline root (a folder under kfp.local); the step reads the file
    as it was when the run started, and imports the notebook's own module from it."""
    from kfp import components

    (tmp_path / "data.csv").write_text("a,b\n1,2\n3,4\n")
    (tmp_path / "helpers.py").write_text("def total(rows):\n    return sum(sum(r) for r in rows)\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # as in a Jupyter kernel, started in the notebook's folder
    kernel.run(f"%config Kale.pipeline_root = {str(kfp_local)!r}")
    kernel.cells("%%imports\nimport csv\nimport helpers",
                 "%%step read\nrows = [[int(v) for v in r] for r in list(csv.reader(open('data.csv')))[1:]]",
                 "%%step add\ns = helpers.total(rows)")
    run = kernel.run("%kale_run --engine kfp --compile-only --no-cache")
    assert run.status == "compiled", run.state.error
    (tmp_path / "data.csv").write_text("a,b\n100,200\n")  # edited after the run started
    components.load_component_from_file(str(run.pipeline_file))()
    assert marshal.load(outputs(kfp_local, "read", "rows")) == [[1, 2], [3, 4]]
    assert marshal.load(outputs(kfp_local, "add", "s")) == kernel.ns["s"] == 10


def test_a_step_with_a_megabyte_of_functions_runs(kernel, kfp_local, tmp_path):
    """Too large for a command-line argument (128 KiB): the step's notebook travels with the environment."""
    from kfp import components

    functions = "".join(f"def f{i}(x):\n    return x + {i}  # {'padding ' * 4}\n\n" for i in range(16000))
    assert len(functions) > 1_000_000
    plan = recorded_plan(kernel, ["%%functions\n" + functions, "%%step big\ny = f15999(1)"])
    path = compile_for_test(plan, tmp_path / "pipeline.yaml")
    assert path.stat().st_size < 1_000_000  # the notebook is carried compressed, once
    components.load_component_from_file(str(path))()
    assert marshal.load(outputs(kfp_local, "big", "y")) == kernel.ns["y"] == 16000


def download_imported_values(spec_text: str, client, launcher_dir: Path) -> list[str]:
    """What KFP's launcher does for an input artifact an importer made of a folder URI (``downloadArtifacts`` ->
    ``objectstore.DownloadBlob``: every object under the prefix) to ``/s3/<bucket>/<key>/``; the importers of
    values an earlier run saved (not kale-magic's runtime or snapshot, which tests/containers fetches)."""
    import yaml

    spec = next(yaml.safe_load_all(spec_text))
    uris = sorted(e["importer"]["artifactUri"]["constant"] for e in spec["deploymentSpec"]["executors"].values()
                  if str(e.get("importer", {}).get("metadata", {}).get("kale", "")).startswith("value "))
    for uri in uris:
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
            for item in page.get("Contents", []):
                target = launcher_dir / bucket / item["Key"]
                target.parent.mkdir(parents=True, exist_ok=True)
                client.download_file(bucket, item["Key"], str(target))
                target.chmod(0o644)
    for folder in launcher_dir.rglob("*"):
        if folder.is_dir():
            folder.chmod(0o755)
    return uris


def test_a_kfp_partial_run_imports_the_earlier_runs_values_from_s3(kernel, kfp_local, tmp_path_factory, s3_env):
    """``%kale_run --from train`` on KFP: load is not run; its values come from the artifacts the earlier
    KFP run left in S3, through importer tasks, into train's real container; every value equals the kernel's."""
    from containers import launcher_download
    from kfp import components
    from kfp_api_server import FakeKfpServer
    from oracle import values_equal

    root = f"s3://{s3_env.bucket}/results"
    kernel.cells(*NOTEBOOK)
    kernel.run(f"%config Kfp.pipeline_root = {root!r}")
    cluster_dir = tmp_path_factory.mktemp("cluster")  # outside the notebook's folder (--no-snapshot)
    imported: list[list[str]] = []
    with FakeKfpServer() as server:
        def cluster(run):
            version = server.versions[run["pipeline_version_reference"]["pipeline_version_id"]]
            yaml_file = cluster_dir / f"{run['run_id']}.yaml"
            yaml_file.write_text(version["spec_text"])
            launcher_download(version["spec_text"], s3_env.client(), kfp_local / ".launcher")
            imported.append(download_imported_values(version["spec_text"], s3_env.client(), kfp_local / ".launcher"))
            components.load_component_from_file(str(yaml_file))()
            local_run = outputs(kfp_local, ".", ".").resolve()
            pipeline = server.pipelines[version["pipeline_id"]]["name"]
            for path in sorted(p for p in local_run.rglob("*") if p.is_file()):
                task, *rest = path.relative_to(local_run).parts
                key = f"results/{pipeline}/{run['run_id']}/{task}/salt1/{'/'.join(rest)}"
                s3_env.client().upload_file(str(path), s3_env.bucket, key)

        server.on_run_created(cluster)
        server.script_run(dict(state="SUCCEEDED", tasks=dict.fromkeys(("load", "train", "report"), "SUCCEEDED")))
        full = kernel.run(f"%kale_run --host {server.url} --no-snapshot --no-cache")
        assert full.status == "succeeded", full.state.error
        server.script_run(dict(state="SUCCEEDED", tasks=dict.fromkeys(("train", "report"), "SUCCEEDED")))
        partial = kernel.run(f"%kale_run --host {server.url} --no-snapshot --no-cache --from train")
    assert partial.status == "succeeded", partial.state.error
    assert imported[0] == [] and len(imported[1]) == 2  # X and sizes of load, from the first run's artifacts
    assert all(uri.startswith(f"{root}/") and f"/{full.state.ids.kfp_run_id}/load/salt1/" in uri
               for uri in imported[1])
    assert partial.steps["load"].status == "cached" and partial.steps["load"].cached_from == full.id
    for name in ("X", "sizes", "model", "summary"):  # the oracle: train ran on the imported values
        assert values_equal(partial.load(name), kernel.ns[name]), name
    assert partial.metrics == {"acc": kernel.ns["acc"]}


IMAGE_NOTEBOOK = ["%%imports\nimport numpy as np", "%%step load\nx = np.arange(5.0)", "%%step total\ns = float(x.sum())",
                  "%%metrics\ns"]


@pytest.fixture
def built_image(tmp_path, docker_client, base_image):
    """An image built by ``kale-magic image`` for IMAGE_NOTEBOOK (pip in the build reaches the index over
    the host's network)."""
    from cli_helpers import code, kale_magic, write

    tag = f"kale-test/steps:{tmp_path.name.lower()[-20:]}"
    write(tmp_path / "nb.ipynb", *[code(c) for c in ["%load_ext kale_magic", *IMAGE_NOTEBOOK]])
    result = kale_magic("image", "nb.ipynb", "-t", tag, "--network", "host", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"built {tag}" in result.stdout
    yield tag
    docker_client.images.remove(tag, force=True)


def test_an_image_from_kale_magic_image_runs_the_steps_without_installing(kernel, kfp_local, tmp_path,
                                                                        built_image):
    from kfp import components

    kernel.cells(*IMAGE_NOTEBOOK)
    kernel.run(f"%config Kale.pipeline_root = {str(kfp_local)!r}")  # the snapshot and runtime published there
    kernel.run(f"%config Kale.base_image = {built_image!r}")
    kernel.run("%config Kale.install_packages = False")
    run = kernel.run("%kale_run --engine kfp --compile-only --no-cache")
    text = run.pipeline_file.read_text()
    assert "kale-environment" not in text and "pip install" not in text
    components.load_component_from_file(str(run.pipeline_file))()
    assert marshal.load(outputs(kfp_local, "total", "s")) == kernel.ns["s"] == 10.0

    kernel.run("%config Kale.install_packages = True")  # left on, the environment task finds the rest there
    run = kernel.run("%kale_run --engine kfp --compile-only --no-cache")
    components.load_component_from_file(str(run.pipeline_file))()
    executed = json.loads(outputs(kfp_local, "kale-environment", "executor_output.json").read_text())
    # only kfp's runtime, which the steps' executor runs from the environment
    assert executed["artifacts"]["environment"]["artifacts"][0]["metadata"]["installed"] == ["kfp"]


ANNOTATIONS = ("%%imports", "%%parameters", "%%functions", "%%step", "%%metrics", "%load_ext", "%config")


def demo_plan(kernel, demo):
    from kale_magic.ipynb import read_notebook

    notebook = read_notebook(Path(__file__).parents[1] / "demo_notebooks" / f"{demo}.ipynb")
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code" and cell["source"].lstrip().startswith(ANNOTATIONS):
            kernel.run(cell["source"])
    return kernel.magics.plan()


@pytest.mark.slow  # the demo notebooks' cells run in the kernel
@pytest.mark.parametrize("demo", ["quickstart", "sklearn_digits", "pytorch_mlp"])
def test_every_demo_notebooks_container_specs_fit_the_drivers_argument(kernel, tmp_path, demo):
    """Compiled with the defaults (no setting at all): each executor's container spec, as Go JSON, passes a
    real exec as the driver's one argument; kale-magic's wheel is in none of them."""
    from containers import driver_argv

    from kale_magic.engines.kfp.delivery import SPEC_LIMIT

    path = compile_pipeline(demo_plan(kernel, demo), tmp_path / "pipeline.yaml")
    sizes = driver_argv(path)
    assert "exec-kale-environment" in sizes and max(sizes.values()) <= SPEC_LIMIT
    assert sizes["exec-kale-environment"] < 16 * 1024  # what it installs, not what it carries


@pytest.mark.parametrize("demo", ["quickstart", "sklearn_digits", "pytorch_mlp"])
def test_the_demo_notebooks_give_the_kernels_metrics_in_containers(kernel, kfp_local, tmp_path, demo):
    """The tutorial's pipelines, compiled with the defaults: their metrics equal what the kernel computed."""
    from kfp import components

    plan = demo_plan(kernel, demo)
    components.load_component_from_file(str(compile_for_test(plan, tmp_path / "pipeline.yaml")))()
    metrics = {}
    for step in plan.steps.values():
        if step.metrics:
            metrics.update(json.loads(outputs(kfp_local, step.name, "kale_metrics").read_text()))
    assert metrics == {name: kernel.ns[name] for name in plan.metrics}
