"""Kubeflow runs whose steps live by the launcher's contract, in real containers, against a real S3 store.

``%kale_run`` talks to a fake multi-user KFP API server (tests/kfp_api_server.py) with namespace
``team-a`` and no pipeline root set, so the snapshot and runtime go to the namespace's default root; the
"cluster" runs the uploaded YAML task by task under tests/containers/launcher.py: each executor's container
spec through the driver's real exec argv, store URIs in the executor input, inputs downloaded before the
command and outputs uploaded after it with the namespace's credentials, which SeaweedFS confines to the
profile controller's prefixes. ``run.load`` reads what the steps uploaded; every value equals the kernel's
(the oracle), metrics included.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import s3_server as s3
import yaml

from kale_magic.engines.kfp.delivery import MULTI_USER_ROOT
from kale_magic.engines.kfp.footprint import UNPACK_MOUNT

s3_server, s3_env, namespace_store = s3.s3_server, s3.s3_env, s3.namespace_store  # the fixtures
ROOT = MULTI_USER_ROOT.format(namespace=s3.NAMESPACE)
ANNOTATIONS = ("%%imports", "%%parameters", "%%functions", "%%step", "%%metrics")


@pytest.fixture(scope="session")
def launcher_local_root(tmp_path_factory):
    """kfp.local's own root for the launcher's runs: only executor-output files and its cache live there
    (the environment task, the same in several tests, runs once per session)."""
    path = tmp_path_factory.mktemp("kfp-launcher-root")
    path.chmod(0o777)
    return path


def start_cluster(monkeypatch, tmp_path_factory, client, local_root: Path, pip_cache: Path, **runner_args):
    from kfp import local

    from containers import POD_USER, runner
    from containers.launcher import Launcher

    launcher = Launcher(client, ROOT, tmp_path_factory.mktemp("launcher-scratch"), uid=POD_USER)
    launcher.install(monkeypatch)
    local.init(runner=runner(pip_cache, user=f"{POD_USER}:0", **runner_args), pipeline_root=str(local_root),
               enable_caching=True, cache_root=str(local_root / ".kfp-cache"))
    return launcher


@pytest.fixture
def cluster(base_image, pip_cache, namespace_store, launcher_local_root, kfp_env, monkeypatch, tmp_path_factory):
    """A launcher over DockerRunner tasks with this machine's pip sources (and shared pip cache)."""
    return start_cluster(monkeypatch, tmp_path_factory, namespace_store, launcher_local_root, pip_cache)


def run_on_cluster(kernel, launcher, tasks: list[str], folder: Path, line: str = "--no-cache"):
    """``%kale_run`` on a fake multi-user KFP server whose run is the uploaded YAML under ``launcher``."""
    from kfp_api_server import FakeKfpServer

    failures = []
    kernel.run(f"%config Kfp.namespace = {s3.NAMESPACE!r}")
    with FakeKfpServer(multi_user=True) as server:
        def cluster(run):
            try:
                text = server.spec_of(run["pipeline_version_reference"]["pipeline_version_id"])
                spec = next(yaml.safe_load_all(text))
                launcher.run_path = f"{spec['pipelineInfo']['name']}/{run['run_id']}"  # the driver's
                path = folder / f"{run['run_id']}.yaml"
                path.write_text(text)
                launcher.run(path, **run.get("runtime_config", {}).get("parameters", {}))
            except BaseException as error:  # the run still reads SUCCEEDED: the test fails on this
                failures.append(error)

        server.on_run_created(cluster)
        server.script_run(dict(state="SUCCEEDED", tasks={task: "SUCCEEDED" for task in tasks}))
        run = kernel.run(f"%kale_run --host {server.url} {line}")
    assert not failures, failures[0]
    return run


def check_contract(launcher, run) -> None:
    """What the steps got and left: the runtime (when the environment task ran: the session shares kfp.local's
    cache) and environment came from the store, every output went to this run's folder under the namespace's
    root, and no container had the store's credentials."""
    from kale_magic.engines.kfp.compiler import Names

    if any("kale-environment" in uri for uri in launcher.uploaded):  # it ran (not one of kfp.local's cache hits)
        assert any("/kale-runtime/" in uri for uri in launcher.downloaded), launcher.downloaded
    assert any(uri.endswith("/environment") for uri in launcher.downloaded), launcher.downloaded
    run_root = f"{ROOT}/{Names(run.plan).pipeline}/"
    steps = [uri for uri in launcher.uploaded if "kale-environment" not in uri]
    assert steps and all(uri.startswith(run_root) for uri in steps), launcher.uploaded
    assert not [name for env in launcher.environments for name in env if name.startswith("AWS_")]
    # each step unpacked its environment into the memory-backed emptyDir its executor's config asks for
    assert [step for step in run.plan.steps if UNPACK_MOUNT not in launcher.tmpfs.get(step, {})] == []


def demo_cells(demo: str) -> list[str]:
    from kale_magic.ipynb import read_notebook

    notebook = read_notebook(Path(__file__).parents[1] / "demo_notebooks" / f"{demo}.ipynb")
    return [cell["source"] for cell in notebook["cells"]
            if cell["cell_type"] == "code" and cell["source"].lstrip().startswith(ANNOTATIONS)]


def test_a_write_outside_the_namespaces_prefixes_is_refused_and_fails_the_task(namespace_store, tmp_path):
    """The store enforces the profile controller's policy; the launcher's upload of an output there fails
    with the launcher's message (and a write inside is allowed)."""
    from botocore.exceptions import ClientError

    from containers.launcher import Launcher

    namespace_store.put_object(Bucket=s3.KFP_BUCKET, Key=f"private-artifacts/{s3.NAMESPACE}/ok", Body=b"1")
    for key in ("v2/artifacts/x", "private-artifacts/team-b/x"):
        with pytest.raises(ClientError, match="AccessDenied"):
            namespace_store.put_object(Bucket=s3.KFP_BUCKET, Key=key, Body=b"1")
    with pytest.raises(ClientError, match="AccessDenied"):
        namespace_store.get_object(Bucket=s3.KFP_BUCKET, Key="v2/artifacts/x")

    launcher = Launcher(namespace_store, "minio://mlpipeline/v2/artifacts", tmp_path)
    output = tmp_path / "minio/mlpipeline/v2/artifacts/p/r/step/salt/x"
    output.parent.mkdir(parents=True)
    output.write_text("1")
    spec = {"outputs": {"artifacts": {"x": {"artifacts": [{"uri": "minio://mlpipeline/v2/artifacts/p/r/step/salt/x"}]}}}}
    with pytest.raises(RuntimeError, match="failed to upload output artifact 'x' to remote storage URI "
                                           "'minio://mlpipeline/v2/artifacts/p/r/step/salt/x': .*AccessDenied"):
        launcher._upload(spec, tmp_path)


@pytest.mark.slow
def test_the_quickstart_notebook_under_the_launcher_gives_the_kernels_values(kernel, cluster, tmp_path_factory,
                                                                            capfd):
    import re

    from oracle import check, run_cells

    after_step = run_cells(kernel, demo_cells("quickstart"))
    capfd.readouterr()
    run = run_on_cluster(kernel, cluster, ["load", "clean", "stats", "report"], tmp_path_factory.mktemp("yaml"))
    logs = capfd.readouterr()
    where = re.findall(r"kale-magic: received \d+ archives of the environment, unpacked \d+ (.+?) in [\d.]+ s",
                       logs.out + logs.err)
    assert where == ["in memory"] * 4, where  # every step, in its memory volume
    assert "is not a writable location" not in logs.out + logs.err  # IPython found the pod's HOME
    assert check(run, after_step) == len(list(run.plan.transfers()))
    assert run.metrics == {"mean": kernel.ns["mean"], "spread": kernel.ns["spread"]}
    check_contract(cluster, run)


SKLEARN = [
    """
    %%imports
    import pandas as pd
    from sklearn.linear_model import LogisticRegression
    """,
    """
    %%parameters
    c = 0.5
    """,
    """
    %%step data
    frame = pd.read_csv("measurements.csv")
    """,
    """
    %%step train
    model = LogisticRegression(C=c).fit(frame[["a", "b"]], frame.label)
    coefficients = model.coef_
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


@pytest.mark.slow
@pytest.mark.timeout(900)  # the environment task installs and packs 31 distributions: 4-5 min on a busy machine
def test_a_pandas_and_scikit_learn_notebook_reading_a_workspace_file_under_the_launcher(kernel, cluster,
                                                                                      tmp_path, tmp_path_factory):
    """The workspace file reaches the steps only as the snapshot the launcher downloaded."""
    import numpy as np

    from oracle import check, run_cells

    rng = np.random.default_rng(5)
    a, b = rng.normal(size=120), rng.normal(size=120)
    rows = "\n".join(f"{x},{y},{int(x + 0.5 * y > 0)}" for x, y in zip(a.tolist(), b.tolist()))
    (tmp_path / "measurements.csv").write_text(f"a,b,label\n{rows}\n")
    after_step = run_cells(kernel, SKLEARN)
    run = run_on_cluster(kernel, cluster, ["data", "train", "evaluate"], tmp_path_factory.mktemp("yaml"))
    assert check(run, after_step) == 4
    assert run.metrics == {"accuracy": kernel.ns["accuracy"]}
    check_contract(cluster, run)
    assert any("/kale-snapshots/" in uri for uri in cluster.downloaded), cluster.downloaded


NUMPY = [
    "%%imports\nimport numpy as np",
    "%%parameters\nn = 5",
    "%%step load\nx = np.arange(n) * 1.5",
    "%%step total\ns = float(x.sum())\nsizes = [int(v) for v in x]",
    "%%metrics\ns",
]


@pytest.mark.slow
def test_with_only_the_package_index_a_users_cluster_has(kernel, base_image, namespace_store, kfp_env,
                                                         monkeypatch, tmp_path_factory):
    """No pip configuration of this machine in the containers, no shared cache, a kfp.local cache of its
    own: the environment task installs the pins and kfp from the public index the image's pip knows (PyPI),
    and the run's values come back through the store."""
    from oracle import check, run_cells

    root, cache = tmp_path_factory.mktemp("cluster-root"), tmp_path_factory.mktemp("cluster-pip-cache")
    root.chmod(0o777)
    cache.chmod(0o777)
    launcher = start_cluster(monkeypatch, tmp_path_factory, namespace_store, root, cache, host_pip=False)
    after_step = run_cells(kernel, NUMPY)
    run = run_on_cluster(kernel, launcher, ["load", "total"], tmp_path_factory.mktemp("yaml"))
    assert check(run, after_step) == 3
    assert run.metrics == {"s": kernel.ns["s"]}
    check_contract(launcher, run)
    pip = {name for env in launcher.environments for name in env if name.startswith("PIP_")}
    assert pip == {"PIP_CACHE_DIR", "PIP_DISABLE_PIP_VERSION_CHECK", "PIP_ROOT_USER_ACTION"}, pip


SPLIT = [
    "%%step nums\nimport numpy as np\nx = np.arange(4) * 1.5",
    "%%step doc\nimport yaml\ndoc = yaml.safe_dump({'a': [1, 2]})",
    "%%step total\ns = float(x.sum())",
    "%%step back\nback = __import__('ya' + 'ml').safe_load(doc)",
]


def received(launcher, task: str) -> set[str]:
    """The environment's archives the launcher downloaded for ``task`` (its executor input's artifacts)."""
    import json

    from kale_magic.engines.kfp.bootstrap import ARCHIVE_INPUT

    for argv in launcher.commands:
        spec = json.loads(argv[argv.index("--executor_input") + 1])
        if spec["outputs"]["outputFile"].split("/")[-3] == task:
            artifacts = spec["inputs"].get("artifacts", {})
            assert "kale_environment" in artifacts
            return {name[len(ARCHIVE_INPUT):] for name in artifacts if name.startswith(ARCHIVE_INPUT)}
    raise AssertionError(f"no task {task} ran")


@pytest.mark.slow
def test_a_step_downloads_only_the_archives_of_its_own_distributions(kernel, cluster, tmp_path_factory):
    """nums gets numpy and not PyYAML, doc PyYAML and not numpy, total numpy for the array it loads; back,
    whose ``__import__`` names nothing, gets every archive; every value is the kernel's."""
    from oracle import check, run_cells

    after_step = run_cells(kernel, SPLIT)
    run = run_on_cluster(kernel, cluster, ["nums", "doc", "total", "back"], tmp_path_factory.mktemp("yaml"))
    assert check(run, after_step) == 4
    nums, doc, total, back = (received(cluster, task) for task in ("nums", "doc", "total", "back"))
    assert "numpy" in nums and "pyyaml" not in nums
    assert "pyyaml" in doc and "numpy" not in doc
    assert "numpy" in total and "pyyaml" not in total
    assert {"numpy", "pyyaml"} | nums | doc <= back
    check_contract(cluster, run)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_run_load_of_a_foreach_steps_values_lists_its_items_from_the_store_in_item_order(kernel, cluster,
                                                                                       tmp_path_factory):
    """The items of a --foreach step upload under one task folder, apart only by the driver's salt; each says
    its item in what it uploads, so run.load of the step's own values (and of the fan-in's) equals the
    kernel's lists."""
    from oracle import check, run_cells
    from test_foreach import KFOLD

    from kale_magic.engines.kfp.compiler import Names
    from kale_magic.snapshot.remote import list_keys

    cells = [c.replace("n_folds = 5", "n_folds = 3") for c in KFOLD] + ["%%metrics\naccuracy"]
    after_step = run_cells(kernel, cells)
    run = run_on_cluster(kernel, cluster, ["split", "kale-items-train", "train", "check", "summary"],
                         tmp_path_factory.mktemp("yaml"))
    assert check(run, after_step) == 10  # every value each step loads, the loop's own lists among them
    assert [len(run.load(name)) for name in ("score", "model", "calibrated")] == [3, 3, 3]
    assert run.metrics == {"accuracy": kernel.ns["accuracy"]}
    check_contract(cluster, run)
    task = f"{ROOT}/{Names(run.plan).pipeline}/{run.state.ids.kfp_run_id}/train/"
    salts = {key[len(task):].split("/")[0] for key in list_keys(task)}
    assert len(salts) == 3  # one folder per item, apart by the salt only
