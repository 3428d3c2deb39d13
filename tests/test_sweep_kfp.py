"""%kale_run --sweep on Kubeflow Pipelines: a KFP run per point, the later ones created once the first point's
shared steps are done, so KFP's cache serves them; each point's parameters and metrics in the run store.
A real kernel, the real kfp.Client, the fake API server (tests/kfp_api_server.py) and the S3 test store."""

import json
import threading

import pytest
import s3_server as s3
import yaml

from kale_magic.engines.kfp.compiler import METRICS, Names
from kale_magic.errors import KaleError
from kale_magic.history.store import RunStore

s3_server, s3_env, kfp_default_store = s3.s3_server, s3.s3_env, s3.kfp_default_store  # the fixtures

CELLS = [
    "%%parameters\nn = 4\nscale = 2",
    "%%step load\ndata = list(range(n))",
    "%%step total\ntotal = sum(data) * scale",
    "%%metrics\ntotal",
]


def load_parts(text: str, task: str) -> tuple:
    """What KFP's cache fingerprints of a task: its spec, its component, its executor's container."""
    spec = next(yaml.safe_load_all(text))
    node = spec["root"]["dag"]["tasks"][task]
    component = spec["components"][node["componentRef"]["name"]]
    return node, component, spec["deploymentSpec"]["executors"][component["executorLabel"]]


def test_a_sweep_on_kfp_is_a_run_per_point_sharing_the_steps_through_kfps_cache(kernel, kfp_server,
                                                                              kfp_default_store, tmp_path):
    kernel.cells(*CELLS, "%config Kfp.pipeline_root = 's3://mlpipeline/kfp-root'")  # metrics read back from it
    names = Names(kernel.magics.plan())
    created, lock = [], threading.Lock()

    def cluster(run):  # what the cluster does: KFP's cache serves `load` once a run computed it
        parameters = run["runtime_config"]["parameters"]
        with lock:
            done = {r["run_id"]: r["state"] for r in kfp_server.runs.values() if r["run_id"] != run["run_id"]}
            created.append((run["run_id"], parameters, done))
            load = "CACHED" if len(created) > 1 else "SUCCEEDED"
        total = sum(range(parameters["n"])) * parameters["scale"]
        key = f"kfp-root/{names.pipeline}/{run['run_id']}/{names.tasks['total']}/salt/{METRICS}"
        kfp_default_store.client().put_object(Bucket="mlpipeline", Key=key, Body=json.dumps({"total": total}).encode())
        kfp_server.set_run(run["run_id"], "SUCCEEDED", tasks={"load": load, "total": "SUCCEEDED"})

    kfp_server.on_run_created(cluster)
    sweep = kernel.run(f"%kale_run --host {kfp_server.url} --experiment tune --sweep scale=1,2,3")
    assert sweep.status == "succeeded", [r.state.error for r in sweep.runs]
    assert [p for _, p, _ in created] == [{"n": 4, "scale": s} for s in (1, 2, 3)]
    first = created[0][0]
    assert all(done[first] == "SUCCEEDED" for _, _, done in created[1:])  # created after the first point's
    assert sweep.shared == ("load",)
    assert [r.steps["load"].status for r in sweep.runs] == ["succeeded", "cached", "cached"]
    # KFP's cache key of `load` is its component and inputs: the same YAML, and no swept parameter among them
    spec = next(yaml.safe_load_all(sweep.runs[0].pipeline_file.read_text()))
    load_inputs = spec["root"]["dag"]["tasks"][names.tasks["load"]].get("inputs", {}).get("parameters", {})
    assert "scale" not in load_inputs and "n" in json.dumps(load_inputs)
    versions = [kfp_server.runs[run_id]["pipeline_version_reference"]["pipeline_version_id"] for run_id, _, _ in created]
    assert len({json.dumps(load_parts(kfp_server.spec_of(v), names.tasks["load"]), sort_keys=True)
                for v in versions}) == 1  # per point only the pipeline's defaults differ
    assert len({r.state.ids.snapshot_id for r in sweep.runs}) == 1  # every point on the first point's files

    table = kernel.run(f"%kale_runs --sweep {sweep.id}")
    assert list(table.frame["scale"]) == [1, 2, 3] and list(table.frame["total"]) == [6, 12, 18]
    assert list(table.frame["engine"]) == ["kfp"] * 3
    with RunStore.for_workspace(tmp_path) as store:
        assert {r.kfp_run_id for r in store.runs(sweep=sweep.id)} == {run_id for run_id, _, _ in created}
    assert sweep.best("total") is sweep.runs[2]


def test_a_kfp_sweep_refuses_no_cache(kernel, kfp_server):
    kernel.cells(*CELLS)
    with pytest.raises(KaleError, match="--sweep on kfp runs the steps the points share once through its own cache"):
        kernel.run(f"%kale_run --host {kfp_server.url} --no-cache --sweep scale=1,2")
    assert not kfp_server.runs
