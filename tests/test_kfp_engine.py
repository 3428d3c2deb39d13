"""The KFP engine against a fake KFP API server driven by the tests, through the real kfp.Client."""

import socket

import pytest
from kfp_api_server import FakeKfpServer
from kfp_plans import three_step_plan

from kale_magic.engines.kfp import KfpEngine
from kale_magic.errors import EngineError
from kale_magic.kfp_client import resolve_settings
from kale_magic.state import RunState

RUNS = "/apis/v2beta1/runs"
ALL_DONE = {"load": "SUCCEEDED", "train": "SUCCEEDED", "report": "SUCCEEDED"}


@pytest.fixture
def server():
    with FakeKfpServer() as srv:
        yield srv


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for var in ("KF_PIPELINES_ENDPOINT", "KF_PIPELINES_UI_ENDPOINT", "KF_PIPELINES_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setenv("HOME", str(tmp_path))  # no kfp context file


def run(host, tmp_path, parameters=None, plan=None, **engine_args):
    plan = plan or three_step_plan()
    state = RunState("run-1", plan.pipeline, plan.experiment, "kfp", list(plan.steps), parameters)
    engine = KfpEngine(host, poll_interval=0.01, pipeline_file=tmp_path / "pipeline.yaml", **engine_args)
    engine.run(plan, state, tmp_path / "run", parameters or {})
    assert state.finished
    return state


def test_successful_run_uploads_the_compiled_yaml_and_follows_steps(server, tmp_path):
    server.script_run(dict(state="SUCCEEDED", tasks=ALL_DONE))
    state = run(server.url, tmp_path, {"n": 9, "cfg": {"layers": [5]}})
    assert state.status == "succeeded", state.error
    (experiment,) = server.experiments.values()
    assert experiment["display_name"] == "exp-a"
    (pipeline,) = server.pipelines.values()
    assert pipeline["display_name"] == "demo-pipeline"
    run_record = server.last_run
    version_id = run_record["pipeline_version_reference"]["pipeline_version_id"]
    assert server.spec_of(version_id) == (tmp_path / "pipeline.yaml").read_text()
    assert run_record["experiment_id"] == experiment["experiment_id"]
    assert run_record["runtime_config"]["parameters"] == {
        "n": 9, "scale": 1.5, "cfg": '{"layers": [5]}', "flag": True}
    assert {s.name: s.status for s in state.steps.values()} == {
        "load": "succeeded", "train": "succeeded", "report": "succeeded"}
    assert [t.status for t in state.tasks.values()][2:] == ["done", "done", "done"]
    assert state.tasks["Compile"].links["YAML"] == str(tmp_path / "pipeline.yaml")
    assert state.links["Run"] == f"{server.url}/#/runs/details/{run_record['run_id']}"
    assert state.links["Pipeline"] == (f"{server.url}/#/pipelines/details/{pipeline['pipeline_id']}"
                                       f"/version/{version_id}")
    assert state.links["Experiment"] == f"{server.url}/#/experiments/details/{experiment['experiment_id']}"


def test_steps_are_reported_while_the_run_progresses(server, tmp_path):
    seen = []
    server.script_run(dict(state="RUNNING", tasks={"load": "RUNNING"}),
                      dict(state="RUNNING", tasks={"load": "SUCCEEDED", "train": "RUNNING"}),
                      dict(state="SUCCEEDED", tasks=ALL_DONE))
    plan = three_step_plan()
    state = RunState("run-1", plan.pipeline, plan.experiment, "kfp", list(plan.steps))
    state.subscribe(lambda st, event: seen.append((event, st.steps[event[5:]].status))
                    if event.startswith("step:") else None)
    KfpEngine(server.url, poll_interval=0.01, pipeline_file=tmp_path / "p.yaml").run(plan, state, tmp_path, {})
    assert seen == [("step:load", "running"), ("step:load", "succeeded"), ("step:train", "running"),
                    ("step:train", "succeeded"), ("step:report", "succeeded")]


def test_existing_pipeline_gets_a_new_version_and_experiment_is_reused(server, tmp_path):
    server.script_run(dict(state="SUCCEEDED", tasks=ALL_DONE))
    run(server.url, tmp_path)
    server.script_run(dict(state="SUCCEEDED", tasks=ALL_DONE))
    state = run(server.url, tmp_path)
    assert state.status == "succeeded"
    assert len(server.pipelines) == 1 and len(server.experiments) == 1
    assert len(server.versions) == 2
    (upload,) = server.requests_to("POST", "/apis/v2beta1/pipelines/upload_version")
    assert upload.query["pipelineid"] == next(iter(server.pipelines))
    assert upload.query["name"] == "demo-pipeline-run-1"
    assert server.last_run["pipeline_version_reference"]["pipeline_version_id"] == list(server.versions)[-1]


def test_failed_run_names_the_failing_step_and_its_message(server, tmp_path):
    server.script_run(dict(state="RUNNING", tasks={"load": "SUCCEEDED", "train": "RUNNING"}),
                      dict(state="FAILED", error="1 task failed",
                           tasks={"load": "SUCCEEDED", "train": ("FAILED", "ZeroDivisionError: division by zero")}))
    state = run(server.url, tmp_path)
    assert state.status == "failed"
    assert state.error == "Step train failed on Kubeflow Pipelines: ZeroDivisionError: division by zero"
    assert state.steps["train"].message == "ZeroDivisionError: division by zero"
    assert state.steps["report"].status == "skipped"
    assert state.tasks["Run"].status == "failed"


def test_canceled_run_finishes(server, tmp_path):
    server.script_run(dict(state="RUNNING", tasks={"load": "RUNNING"}),
                      dict(state="CANCELED", tasks={"load": "CANCELED"}))
    state = run(server.url, tmp_path)
    assert state.status == "failed"
    assert "canceled" in state.error
    assert {s.status for s in state.steps.values()} == {"skipped"}


def test_upload_only_creates_no_run(server, tmp_path):
    state = run(server.url, tmp_path, upload_only=True)
    assert state.status == "succeeded"
    assert len(server.versions) == 1 and not server.runs
    assert state.tasks["Upload"].status == "done" and state.tasks["Run"].status == "skipped"


def test_compile_only_talks_to_no_server(tmp_path):
    state = run(None, tmp_path, compile_only=True)
    assert state.status == "succeeded"
    assert (tmp_path / "pipeline.yaml").is_file()
    assert state.tasks["Upload"].status == "skipped"


def test_unreachable_host_is_a_clear_error_and_keeps_the_yaml(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        state = run(f"http://127.0.0.1:{port}", tmp_path)
    assert state.status == "failed"
    assert state.error.startswith(f"Cannot reach Kubeflow Pipelines at http://127.0.0.1:{port}")
    assert "KF_PIPELINES_ENDPOINT" in state.error
    assert str(tmp_path / "pipeline.yaml") in state.error
    assert (tmp_path / "pipeline.yaml").is_file()
    assert state.tasks["Upload"].status == "failed"


def test_missing_host_names_the_settings(tmp_path):
    state = run(None, tmp_path)
    assert "No Kubeflow Pipelines host is configured" in state.error
    assert "Kale.host" in state.error


def test_rejected_credentials_say_which_setting_to_check(tmp_path):
    with FakeKfpServer(token="s3cret-token") as srv:
        state = run(srv.url, tmp_path)
    assert state.status == "failed"
    assert "refused the credentials" in state.error and "KF_PIPELINES_TOKEN" in state.error
    assert "HTTP 401" in state.error


def test_token_is_sent_and_never_shown(tmp_path, monkeypatch):
    monkeypatch.setenv("KF_PIPELINES_TOKEN", "s3cret-token")
    with FakeKfpServer(token="s3cret-token") as srv:
        srv.script_run(dict(state="SUCCEEDED", tasks=ALL_DONE))
        state = run(srv.url, tmp_path)
        settings = resolve_settings(srv.url)
    assert state.status == "succeeded", state.error
    assert all(r.headers["authorization"] == "Bearer s3cret-token" for r in srv.requests)
    shown = repr([(t.message, t.links) for t in state.tasks.values()]) + repr(state.links) + state.error
    assert "s3cret" not in shown
    assert "s3cret" not in (tmp_path / "pipeline.yaml").read_text()
    assert settings.token == "s3cret-token" and "s3cret" not in repr(settings)


def test_server_errors_carry_the_servers_message(server, tmp_path):
    server.fail("POST", "/apis/v2beta1/pipelines/upload", 500, "storage backend unavailable")
    state = run(server.url, tmp_path)
    assert state.error.startswith(f"Kubeflow Pipelines at {server.url} answered HTTP 500 while uploading")
    assert "storage backend unavailable" in state.error
    assert not server.runs


def test_run_creation_error(server, tmp_path):
    server.fail("POST", RUNS, 400, "Invalid input error: parameter n has the wrong type")
    state = run(server.url, tmp_path)
    assert "HTTP 400 while creating the run: Invalid input error: parameter n" in state.error
    assert state.tasks["Run"].status == "failed"


def test_no_pipeline_is_left_without_its_version(server, tmp_path):
    server.fail("GET", "/apis/v2beta1/pipelines/pipeline-", 503, "versions table locked")
    state = run(server.url, tmp_path)
    assert "versions table locked" in state.error
    assert server.pipelines == {} and server.versions == {}
    (delete,) = [r for r in server.requests if r.method == "DELETE"]
    assert delete.path.startswith("/apis/v2beta1/pipelines/pipeline-")


def test_settings_resolution_order(monkeypatch):
    monkeypatch.setenv("KF_PIPELINES_ENDPOINT", "http://env:1")
    assert resolve_settings().host == "http://env:1"
    assert resolve_settings(config={"host": "http://config:2"}).host == "http://config:2"
    assert resolve_settings("http://arg:3", config={"host": "http://config:2"}).host == "http://arg:3"
    assert resolve_settings().ui_host == "http://env:1"
    monkeypatch.setenv("KF_PIPELINES_UI_ENDPOINT", "https://ui.example")
    settings = resolve_settings()
    assert settings.ui_host == "https://ui.example"
    assert settings.link("runs/details/r1") == "https://ui.example/#/runs/details/r1"
    assert resolve_settings("kfp.example:8443").host == "https://kfp.example:8443"
    monkeypatch.delenv("KF_PIPELINES_ENDPOINT")
    with pytest.raises(EngineError, match="Kale.host"):
        resolve_settings()
