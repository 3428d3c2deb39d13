"""The KFP engine against a fake KFP API server driven by the tests, through the real kfp.Client."""

import dataclasses
import json
import socket

import pytest
from kfp_api_server import FakeKfpServer
from kfp_plans import follow as run
from kfp_plans import three_step_plan

from kale_magic.engines.base import Outcome
from kale_magic.engines.kfp.client import resolve_settings
from kale_magic.engines.kfp.engine import KfpEngine
from kale_magic.errors import EngineError
from kale_magic.layout import RunDir
from kale_magic.run import launch
from kale_magic.run.state import RunState

RUNS = "/apis/v2beta1/runs"
ALL_DONE = {"load": "SUCCEEDED", "train": "SUCCEEDED", "report": "SUCCEEDED"}


pytestmark = pytest.mark.usefixtures("kfp_env")  # every test, also those starting a server of their own


@pytest.fixture
def server(kfp_server):
    """The shared fake KFP API server (conftest), unscripted."""
    return kfp_server


def failed_upload(host, tmp_path, **engine_args):
    with pytest.raises(EngineError) as info:
        run(host, tmp_path, **engine_args)
    return str(info.value)


def test_successful_run_uploads_the_compiled_yaml_and_follows_steps(server, tmp_path):
    server.script_run(dict(state="SUCCEEDED", tasks=ALL_DONE))
    state = run(server.url, tmp_path, {"n": 9, "cfg": {"layers": [5]}})
    assert (state.status, state.error) == ("succeeded", "")
    (experiment,) = server.experiments.values()
    assert experiment["display_name"] == "exp-a"
    (pipeline,) = server.pipelines.values()
    assert pipeline["display_name"] == "demo-pipeline"
    run_record = server.last_run
    version_id = run_record["pipeline_version_reference"]["pipeline_version_id"]
    assert server.spec_of(version_id) == (tmp_path / "pipeline.yaml").read_text()
    assert run_record["experiment_id"] == experiment["experiment_id"]
    assert run_record["runtime_config"]["parameters"] == {
        "n": 9, "scale": 1.5, "cfg": "{'layers': [5]}", "flag": True}
    assert {s.name: s.status for s in state.steps.values()} == {
        "load": "succeeded", "train": "succeeded", "report": "succeeded"}
    assert state.tasks["Upload"].status == "done"
    assert state.links["run"] == f"{server.url}/#/runs/details/{run_record['run_id']}"
    assert state.links["pipeline"] == (f"{server.url}/#/pipelines/details/{pipeline['pipeline_id']}"
                                       f"/version/{version_id}")
    assert state.links["experiment"] == f"{server.url}/#/experiments/details/{experiment['experiment_id']}"
    assert state.tasks["Run"].links["run"] == state.links["run"]
    assert sorted(p.name for p in (tmp_path / "run" / "notebooks").iterdir()) == [
        "load.ipynb", "report.ipynb", "train.ipynb"]


def test_steps_are_reported_while_the_run_progresses(server, tmp_path):
    seen = []
    server.script_run(dict(state="RUNNING", tasks={"load": "RUNNING"}),
                      dict(state="RUNNING", tasks={"load": "SUCCEEDED", "train": "RUNNING"}),
                      dict(state="SUCCEEDED", tasks=ALL_DONE))
    plan = three_step_plan()
    state = RunState("run-1", plan.pipeline, plan.experiment, "kfp", list(plan.steps))
    state.subscribe(lambda st, event: seen.append((event, st.steps[event[5:]].status))
                    if event.startswith("step:") else None)
    engine = KfpEngine(server.url, poll_interval=0.01, pipeline_file=tmp_path / "p.yaml",
                       config={"install_packages": False})  # an image holds kale-magic: no runtime to publish
    compiled = engine.compile(plan, RunDir(tmp_path))
    engine.upload(plan, state, compiled)
    assert engine.run(plan, state, RunDir(tmp_path), compiled) == Outcome("succeeded")
    assert seen == [("step:load", "running"), ("step:load", "succeeded"), ("step:train", "running"),
                    ("step:train", "succeeded"), ("step:report", "succeeded")]


def test_existing_pipeline_gets_a_new_version_and_experiment_is_reused(server, tmp_path):
    server.script_run(dict(state="SUCCEEDED", tasks=ALL_DONE))
    run(server.url, tmp_path, run_id="run-0")
    server.script_run(dict(state="SUCCEEDED", tasks=ALL_DONE))
    state = run(server.url, tmp_path)
    assert state.status == "succeeded"
    assert len(server.pipelines) == 1 and len(server.experiments) == 1
    assert len(server.versions) == 2
    (upload,) = server.requests_to("POST", "/apis/v2beta1/pipelines/upload_version")
    assert upload.query["pipelineid"] == next(iter(server.pipelines))
    assert upload.query["name"] == "demo-pipeline-run-1"
    assert server.last_run["pipeline_version_reference"]["pipeline_version_id"] == list(server.versions)[-1]


STEP_LOG = """running step train
Traceback (most recent call last):
  File "/tmp/tmp.x/ephemeral_component.py", line 9, in train
    run_component(
RuntimeError: step 'train' failed: ZeroDivisionError: division by zero
"""


def test_failed_run_names_the_failing_step_and_the_error_its_pod_printed(server, tmp_path):
    server.script_run(dict(state="RUNNING", tasks={"load": "SUCCEEDED", "train": "RUNNING"}),
                      dict(state="FAILED", error="1 task failed",
                           tasks={"load": "SUCCEEDED", "train": ("FAILED", STEP_LOG)}))
    state = run(server.url, tmp_path)
    assert state.status == "failed"
    assert state.error == "step 'train' failed on Kubeflow Pipelines: ZeroDivisionError: division by zero"
    assert state.steps["train"].message == "ZeroDivisionError: division by zero"
    assert state.steps["report"].status == "skipped"
    (log,) = [r for r in server.requests if r.path.endswith("/log")]
    assert log.path.startswith(f"/apis/v1alpha1/runs/{server.last_run['run_id']}/nodes/")


def test_a_failed_step_without_a_log_says_so(server, tmp_path):
    server.script_run(dict(state="FAILED", tasks={"load": "SUCCEEDED", "train": ("FAILED", "")}))
    state = run(server.url, tmp_path)
    assert state.steps["train"].message == "no message from KFP"


def test_kfp_cache_hits_show_as_cached(server, tmp_path):
    """A cache hit reads as a SUCCEEDED task whose executor pod was SKIPPED: it never ran, so it has no log."""
    server.script_run(dict(state="SUCCEEDED", tasks={"load": "CACHED", "train": "SUCCEEDED", "report": "CACHED"}))
    state = run(server.url, tmp_path)
    assert (state.status, state.error) == ("succeeded", "")
    assert {s.name: s.status for s in state.steps.values()} == {
        "load": "cached", "train": "succeeded", "report": "cached"}


def test_multi_user_runs_of_a_pipeline_add_versions_in_its_namespace(tmp_path):
    with FakeKfpServer(multi_user=True) as srv:
        srv.pipelines["shared"] = {"pipeline_id": "shared", "name": "demo-pipeline", "display_name": "demo-pipeline",
                                   "namespace": "", "created_at": "2026-01-01T00:00:00Z"}
        for n in range(3):
            srv.script_run(dict(state="SUCCEEDED", tasks=ALL_DONE))
            state = run(srv.url, tmp_path, config={"namespace": "team-a"}, run_id=f"run-{n}")
            assert state.status == "succeeded", state.error
        mine = [p for p in srv.pipelines.values() if p["namespace"] == "team-a"]
        assert [p["name"] for p in mine] == ["demo-pipeline"]
        assert len([v for v in srv.versions.values() if v["pipeline_id"] == mine[0]["pipeline_id"]]) == 3
        assert [e["namespace"] for e in srv.experiments.values()] == ["team-a"]
        assert not [v for v in srv.versions.values() if v["pipeline_id"] == "shared"]


def test_single_user_ignores_the_namespace(tmp_path):
    with FakeKfpServer() as srv:
        for n in range(2):
            srv.script_run(dict(state="SUCCEEDED", tasks=ALL_DONE))
            assert run(srv.url, tmp_path, config={"namespace": "team-a"}, run_id=f"run-{n}").status == "succeeded"
        assert [(p["name"], p["namespace"]) for p in srv.pipelines.values()] == [("demo-pipeline", "")]
        assert len(srv.versions) == 2


def test_failed_run_without_task_details_gives_the_runs_error(server, tmp_path):
    server.script_run(dict(state="FAILED", error="pod was evicted"))
    state = run(server.url, tmp_path)
    assert state.error == "the run ended failed on Kubeflow Pipelines: pod was evicted"


def test_canceled_run_finishes(server, tmp_path):
    """Terminating a run fails its running pods (Argo's node phase); the steps read as skipped, not failed."""
    server.script_run(dict(state="RUNNING", tasks={"load": "RUNNING"}),
                      dict(state="CANCELED", tasks={"load": "CANCELED"}))
    state = run(server.url, tmp_path)
    assert state.status == "failed"
    assert "canceled" in state.error
    assert {s.status for s in state.steps.values()} == {"skipped"}


def test_cancel_terminates_the_kfp_run(server, tmp_path):
    server.script_run(dict(state="RUNNING", tasks={"load": "RUNNING"}))
    state = run(server.url, tmp_path, cancel_after="step:load")
    (terminate,) = [r for r in server.requests if r.path.endswith(":terminate")]
    assert terminate.path == f"/apis/v2beta1/runs/{server.last_run['run_id']}:terminate"
    assert state.error == "the run was canceled in Kubeflow Pipelines"


def test_upload_only_creates_no_run(server, tmp_path):
    state = run(server.url, tmp_path, upload_only=True)
    assert len(server.versions) == 1 and not server.runs
    assert state.tasks["Upload"].status == "done"


def test_compiling_talks_to_no_server(tmp_path):
    plan = three_step_plan()
    engine = KfpEngine("http://127.0.0.1:9", pipeline_file=tmp_path / "p.yaml",
                       config={"base_image": "my/image:1", "volumes": ["data:/data"], "host": "http://x:1"})
    compiled = engine.compile(plan, RunDir(tmp_path / "run"))
    assert compiled.pipeline_file.is_file() and set(compiled.notebooks) == set(plan.steps)
    assert "image: my/image:1" in engine.pipeline_file.read_text()


def test_unreachable_host_is_a_clear_error_and_keeps_the_yaml(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        plan = three_step_plan()
        state = RunState("run-1", plan.pipeline, plan.experiment, "kfp", list(plan.steps))
        engine = KfpEngine(f"http://127.0.0.1:{port}", pipeline_file=tmp_path / "pipeline.yaml")
        compiled = launch.compile_steps(plan, state, RunDir(tmp_path), engine)
        with pytest.raises(EngineError) as info:
            launch.upload(plan, state, engine, compiled)
    assert str(info.value).startswith(f"Cannot reach Kubeflow Pipelines at http://127.0.0.1:{port}")
    assert "KF_PIPELINES_ENDPOINT" in str(info.value)
    assert str(info.value).endswith(f"The pipeline YAML is kept at {tmp_path / 'pipeline.yaml'}.")
    assert (tmp_path / "pipeline.yaml").is_file()
    assert (state.status, state.error) == ("failed", str(info.value))
    assert (state.tasks["Upload"].status, state.tasks["Run"].status) == ("failed", "skipped")


def test_missing_host_names_the_settings(tmp_path):
    message = failed_upload(None, tmp_path)
    assert "No Kubeflow Pipelines host is configured" in message and "Kfp.host" in message


def test_rejected_credentials_say_which_setting_to_check(tmp_path):
    with FakeKfpServer(token="s3cret-token") as srv:
        message = failed_upload(srv.url, tmp_path)
    assert "refused the credentials" in message and "KF_PIPELINES_TOKEN" in message
    assert "HTTP 401" in message


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
    message = failed_upload(server.url, tmp_path)
    assert message.startswith(f"Kubeflow Pipelines at {server.url} answered HTTP 500 while uploading")
    assert "storage backend unavailable" in message
    assert not server.runs


def test_run_creation_error(server, tmp_path):
    server.fail("POST", RUNS, 400, "Invalid input error: parameter n has the wrong type")
    state = run(server.url, tmp_path)
    assert "HTTP 400 while creating the run: Invalid input error: parameter n" in state.error


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
    with pytest.raises(EngineError, match="Kfp.host"):
        resolve_settings()


def test_in_cluster_service_account_token_is_used(tmp_path, monkeypatch):
    token_file = tmp_path / "sa-token"
    token_file.write_text("sa-token-value")
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(token_file))
    with FakeKfpServer(token="sa-token-value") as srv:
        state = run(srv.url, tmp_path, upload_only=True)
    assert state.tasks["Upload"].status == "done"
    assert {r.headers["authorization"] for r in srv.requests} == {"Bearer sa-token-value"}


def plain_client(server):
    import warnings

    import kfp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return kfp.Client(host=server.url)


def test_fake_server_speaks_to_the_plain_kfp_client(server, tmp_path):
    """The fixture other tests rely on: what kfp.Client sends is recorded, run states are test-driven,
    and task details come back shaped like the real server's: Argo nodes, no error text, no CACHED
    (test_kfp_api.py holds the rest of the server's contract)."""
    client = plain_client(server)
    (tmp_path / "p.yaml").write_text("pipelineInfo:\n  name: p\n")
    pipeline = client.upload_pipeline(str(tmp_path / "p.yaml"), pipeline_name="p")
    version = client.list_pipeline_versions(pipeline.pipeline_id).pipeline_versions[0]
    experiment = client.create_experiment("e")
    run = client.run_pipeline(experiment.experiment_id, "r", params={"n": 1},
                              pipeline_id=pipeline.pipeline_id, version_id=version.pipeline_version_id)
    server.set_run(run.run_id, "FAILED", tasks={"a": "CACHED", "b": ("FAILED", "boom\n")}, error="b failed")
    got = client.get_run(run.run_id)
    assert (got.state, got.error.message) == ("FAILED", "b failed")
    nodes = sorted((t.display_name, t.state) for t in got.run_details.task_details)
    assert nodes == sorted([("p-00004", "FAILED"), ("root-driver", "SUCCEEDED"), ("root", "FAILED"),
                            ("a-driver", "SUCCEEDED"), ("a", "SUCCEEDED"), ("executor", "SKIPPED"),
                            ("b-driver", "SUCCEEDED"), ("b", "FAILED"), ("executor", "FAILED")])
    assert all(t.error is None for t in got.run_details.task_details)
    log = client._run_api.api_client.call_api(f"/apis/v1alpha1/runs/{run.run_id}/nodes/"
                                              f"{server.pod_of(run.run_id, 'b')}/log", "GET", _preload_content=False)
    assert log.data == b"boom\n"
    assert server.spec_of(version.pipeline_version_id) == "pipelineInfo:\n  name: p\n"
    (upload,) = server.requests_to("POST", "/apis/v2beta1/pipelines/upload")
    assert upload.query["name"] == "p" and upload.files["uploadfile"].startswith(b"pipelineInfo")
    health = client._run_api.api_client.call_api("/apis/v2beta1/healthz", "GET", _preload_content=False)
    assert json.loads(health.data) == {"commit_sha": "0" * 40, "tag_name": "2.17.0", "multi_user": False}


def test_fake_server_refuses_a_duplicate_pipeline_name_in_a_namespace(tmp_path):
    import kfp_server_api

    (tmp_path / "p.yaml").write_text("pipelineInfo:\n  name: p\n")
    with FakeKfpServer(multi_user=True) as srv:
        client = plain_client(srv)
        client.upload_pipeline(str(tmp_path / "p.yaml"), pipeline_name="p", namespace="team-a")
        client.upload_pipeline(str(tmp_path / "p.yaml"), pipeline_name="p", namespace="team-b")
        with pytest.raises(kfp_server_api.ApiException) as info:
            client.upload_pipeline(str(tmp_path / "p.yaml"), pipeline_name="p", namespace="team-a")
        assert info.value.status == 409
        assert "Failed to create a pipeline and a pipeline version" in info.value.body
        assert client.get_pipeline_id("p") is None  # the plain client only looks at shared pipelines
        listed = client.list_pipelines(namespace="team-a").pipelines
        assert [(p.display_name, p.namespace) for p in listed] == [("p", "team-a")]
        with pytest.raises(kfp_server_api.ApiException, match="empty namespace in multi-user mode"):
            client.create_experiment("e")


def test_following_survives_a_few_failed_polls(server, tmp_path):
    server.script_run(dict(state="SUCCEEDED", tasks=ALL_DONE))
    server.fail("GET", RUNS + "/", 503, "apiserver restarting", times=2)
    assert run(server.url, tmp_path).status == "succeeded"


def test_following_gives_up_when_the_api_keeps_failing(server, tmp_path):
    server.script_run(dict(state="RUNNING", tasks={"load": "RUNNING"}))
    server.fail("GET", RUNS + "/", 503, "apiserver gone", times=10)
    state = run(server.url, tmp_path)
    assert state.error.endswith("answered HTTP 503 while following the run: apiserver gone")


@pytest.mark.parametrize("version, refused", [
    ("2.3.0", "--cpu/--memory/--gpu (steps train) need KFP 2.4 or newer; upgrade KFP or remove them."),
    ("2.4.1", "--retries (steps train) need KFP 2.5 or newer; upgrade KFP or remove it."),
    ("1.8.5", "is older than 2.0, whose API kale-magic needs: upgrade KFP."),
])
def test_a_server_too_old_for_the_pipeline_is_refused_before_anything_is_uploaded(tmp_path, version, refused):
    with FakeKfpServer(version=version) as srv:
        with pytest.raises(EngineError) as info:
            run(srv.url, tmp_path)
        assert not srv.pipelines and not srv.runs
        assert refused in str(info.value) and f"Kubeflow Pipelines {version} at {srv.url}" in str(info.value)


def test_the_environment_tasks_requests_need_kfp_2_4(tmp_path):
    plan = three_step_plan()
    plain = dataclasses.replace(plan, steps={n: dataclasses.replace(s, options=dataclasses.replace(
        s.options, cpu=None, memory=None, gpu=None, retries=None)) for n, s in plan.steps.items()})
    with FakeKfpServer(version="2.3.0") as srv:
        message = failed_upload(srv.url, tmp_path, plan=plain, config={"install_packages": True})
    assert "--cpu/--memory/--gpu (steps kale-environment) need KFP 2.4 or newer" in message


def test_volumes_need_a_server_that_parses_kfp_kubernetes_parameters(tmp_path):
    plan = three_step_plan()
    plain = dataclasses.replace(plan, steps={n: dataclasses.replace(s, options=dataclasses.replace(
        s.options, cpu=None, memory=None, gpu=None, retries=None)) for n, s in plan.steps.items()})
    with FakeKfpServer(version="2.4.0") as srv:
        message = failed_upload(srv.url, tmp_path, plan=plain, config={"volumes": ["data:/data"]})
    assert "Kfp.volumes need KFP 2.5 or newer" in message


def test_servers_before_2_16_are_told_to_ignore_the_security_context(tmp_path):
    for version, noted in (("2.5.0", True), ("2.16.1", False), ("unknown", False)):
        with FakeKfpServer(version=version) as srv:
            srv.script_run(dict(state="SUCCEEDED", tasks=ALL_DONE))
            state = run(srv.url, tmp_path / version)
        assert state.status == "succeeded", state.error
        assert ("ignores the pods' security context" in state.tasks["Upload"].message) is noted, version
