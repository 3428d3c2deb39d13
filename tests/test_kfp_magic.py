"""``%kale_run`` on Kubeflow Pipelines, end to end: a real kernel, the real kfp.Client, a fake KFP server."""

import pytest
import yaml

from kale_magic.errors import EngineError, RunFailed

CELLS = [
    "%%parameters\nn = 3\nweights = [1, 2]",
    "%%step load\ndata = list(range(n))",
    "%%step total\ntotal = sum(d * weights[0] for d in data)",
]


@pytest.fixture
def server(kfp_server):
    """The shared fake KFP server, scripted to run this notebook's steps to success."""
    kfp_server.script_run(dict(state="SUCCEEDED", tasks={"load": "SUCCEEDED", "total": "SUCCEEDED"}))
    return kfp_server


def test_kale_run_with_host_compiles_uploads_runs_and_follows(kernel, server, tmp_path):
    kernel.cells(*CELLS)
    run = kernel.run(f"%kale_run --host {server.url} --experiment nightly --param n=5")
    assert run.status == "succeeded", run.state.error
    assert run.pipeline_file == tmp_path / ".kale" / "pipelines" / f"{run.plan.pipeline}.yaml"
    (experiment,) = server.experiments.values()
    assert experiment["display_name"] == "nightly"
    sent = server.last_run
    assert server.spec_of(sent["pipeline_version_reference"]["pipeline_version_id"]) == run.pipeline_file.read_text()
    assert sent["runtime_config"]["parameters"] == {"n": 5, "weights": "[1, 2]"}
    assert {name: step.status for name, step in run.steps.items()} == {"load": "succeeded", "total": "succeeded"}
    assert run.links["run"] == f"{server.url}/#/runs/details/{sent['run_id']}"
    assert set(run.links) >= {"experiment", "pipeline", "run"}
    tasks = run.state.tasks
    assert [tasks[t].status for t in ("Compile", "Upload", "Run")] == ["done", "done", "done"]
    assert tasks["Compile"].links["pipeline"] == str(run.pipeline_file)


def test_configured_host_selects_kfp_and_traits_reach_the_yaml(kernel, server):
    kernel.cells(*CELLS)
    kernel.run(f"%config Kale.host = '{server.url}'")
    kernel.run("%config Kale.base_image = 'registry.example/team/kale:3'")
    kernel.run("%config Kale.volumes = ['data:/mnt/data']")
    run = kernel.run("%kale_run")
    assert run.status == "succeeded" and len(server.runs) == 1
    text = run.pipeline_file.read_text()
    assert "image: registry.example/team/kale:3" in text
    platform = list(yaml.safe_load_all(text))[1]
    assert platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-load"]["pvcMount"][0][
        "mountPath"] == "/mnt/data"


def test_explicit_local_engine_wins_over_a_configured_host(kernel, server):
    kernel.cells(*CELLS)
    kernel.run(f"%config Kale.host = '{server.url}'")
    run = kernel.run("%kale_run --engine local")
    assert run.status == "succeeded" and run.state.engine == "local"
    assert server.requests == []


def test_compile_only_writes_the_yaml_and_stops(kernel, server):
    kernel.cells(*CELLS)
    run = kernel.run(f"%kale_run --engine kfp --host {server.url} --compile-only")
    assert run.pipeline_file.is_file()
    assert run.state.tasks["Upload"].status == "skipped"
    assert server.requests == []


def test_upload_only_uploads_and_stops(kernel, server):
    kernel.cells(*CELLS)
    run = kernel.run(f"%kale_run --host {server.url} --upload-only")
    assert run.status == "uploaded"
    assert len(server.versions) == 1 and not server.runs
    assert run.state.tasks["Run"].status == "skipped"


def test_unreachable_host_is_one_clear_error(kernel, tmp_path):
    kernel.cells(*CELLS)
    error = kernel.error("%kale_run --host http://127.0.0.1:9")
    assert isinstance(error, RunFailed) and isinstance(error.__cause__, EngineError)
    assert str(error).startswith("Cannot reach Kubeflow Pipelines at http://127.0.0.1:9")
    assert str(tmp_path / ".kale" / "pipelines" / f"{kernel.magics.plan().pipeline}.yaml") in str(error)
    assert error.run.state.tasks["Upload"].message == str(error)  # the panel's Upload row says it, once


def test_kf_pipelines_endpoint_selects_kfp(kernel, server, monkeypatch):
    monkeypatch.setenv("KF_PIPELINES_ENDPOINT", server.url)
    monkeypatch.setenv("KF_PIPELINES_UI_ENDPOINT", "https://ui.example")
    kernel.cells(*CELLS)
    run = kernel.run("%kale_run")
    assert run.status == "succeeded" and run.state.engine == "kfp"
    assert run.links["run"] == f"https://ui.example/#/runs/details/{server.last_run['run_id']}"
