"""The KFP engine against the shapes of the real API server (re-derived in kfp_api_server.py from
kubeflow/pipelines' backend), through the real kfp.Client: Argo node IDs that are not pod names, retry
nodes, cache hits, CANCELING, pagination, filters, refusals and authorization failures."""

import json
import warnings

import kfp_server_api
import numpy as np
import pytest
import s3_server as s3
from kfp_api_server import FakeKfpServer, retrieve_pod_name
from kfp_plans import follow as run
from kfp_plans import three_step_plan

from kale_magic import marshal
from kale_magic.engines.kfp.compiler import METRICS, Names
from kale_magic.engines.kfp.results import fetch
from kale_magic.errors import EngineError
from kale_magic.layout import RunDir

s3_server, s3_env, namespace_store = s3.s3_server, s3.s3_env, s3.namespace_store  # the fixtures

ALL_DONE = {"load": "SUCCEEDED", "train": "SUCCEEDED", "report": "SUCCEEDED"}
VERSIONS = ["2.17.0", "2.5.0"]  # the default server, and the oldest that runs every option


pytestmark = pytest.mark.usefixtures("kfp_env")  # conftest: no endpoint, token or context file in the way


@pytest.fixture(params=VERSIONS)
def server(request):
    with FakeKfpServer(version=request.param) as srv:
        yield srv


def plain_client(server):
    import kfp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return kfp.Client(host=server.url)


def log_of(client, run_id, name):
    response = client._run_api.api_client.call_api(f"/apis/v1alpha1/runs/{run_id}/nodes/{name}/log", "GET",
                                                   _preload_content=False)
    return response.status, response.data.decode()


def started(server, tmp_path, tasks, state="SUCCEEDED"):
    """A run of a one-version pipeline, set to ``state`` with ``tasks``, through the plain client."""
    client = plain_client(server)
    (tmp_path / "p.yaml").write_text("pipelineInfo:\n  name: p\nroot:\n  dag:\n    tasks:\n      b:\n"
                                     "        retryPolicy:\n          maxRetryCount: 2\n")
    pipeline = client.upload_pipeline(str(tmp_path / "p.yaml"), pipeline_name="p")
    version = client.list_pipeline_versions(pipeline.pipeline_id).pipeline_versions[0]
    experiment = client.create_experiment("e")
    created = client.run_pipeline(experiment.experiment_id, "r", pipeline_id=pipeline.pipeline_id,
                                  version_id=version.pipeline_version_id)
    server.set_run(created.run_id, state, tasks=tasks)
    return client, created.run_id


# the server's contract -------------------------------------------------------------------------------
def test_child_tasks_hold_argo_node_ids_and_logs_are_read_by_pod_name(server, tmp_path):
    """api_converter.go: child_tasks[].pod_name is a child's node ID; run_log_server.go reads a pod, and
    answers 200 with an error body for anything else; pod names are RetrievePodName's."""
    client, run_id = started(server, tmp_path, {"a": ("SUCCEEDED", "a printed\n"), "c": "CACHED"})
    details = client.get_run(run_id).run_details.task_details
    assert all(t.task_id and getattr(t, "pod_name", None) in (None, "") for t in details)
    a = next(t for t in details if t.display_name == "a")
    (child,) = [c.pod_name for c in a.child_tasks]
    workflow = server.runs[run_id]["_workflow"]
    name = workflow["metadata"]["name"]
    assert child.startswith(f"{name}-") and child[len(name) + 1:].isdigit()  # <workflow>-<fnv32a of the name>
    status, body = log_of(client, run_id, child)
    assert status == 200 and json.loads(body)["error_message"].startswith(f"Failed to read logs for run {run_id}")
    pod = retrieve_pod_name(workflow, workflow["status"]["nodes"][child])
    assert pod == f"{name}-system-container-impl-{child.split('-')[-1]}" == server.pod_of(run_id, "a")
    assert log_of(client, run_id, pod) == (200, "a printed\n")
    c = next(t for t in details if t.display_name == "c")
    skipped = workflow["status"]["nodes"][c.child_tasks[0].pod_name]
    assert (skipped["phase"], skipped["type"]) == ("Skipped", "Skipped")
    assert "error_message" in log_of(client, run_id, retrieve_pod_name(workflow, skipped))[1]  # never had a pod


def test_a_task_with_a_retry_policy_has_a_retry_node_with_one_pod_per_attempt(server, tmp_path):
    client, run_id = started(server, tmp_path, {"b": ("FAILED", ["first\n", "second\n", "third\n"])}, "FAILED")
    workflow = server.runs[run_id]["_workflow"]
    nodes = workflow["status"]["nodes"]
    retry = next(n for n in nodes.values() if n["type"] == "Retry")
    assert (retry["displayName"], retry["templateName"]) == ("executor", "retry-system-container-impl")
    attempts = [nodes[c] for c in retry["children"]]
    assert [(a["displayName"], a["phase"]) for a in attempts] == [
        ("executor(0)", "Failed"), ("executor(1)", "Failed"), ("executor(2)", "Failed")]
    assert log_of(client, run_id, retrieve_pod_name(workflow, attempts[2]))[1] == "third\n"
    shown = {t.display_name for t in client.get_run(run_id).run_details.task_details}
    assert {"b", "b-driver", "executor", "executor(0)", "executor(2)"} <= shown


def test_the_v1beta1_run_carries_the_workflow(server, tmp_path):
    client, run_id = started(server, tmp_path, {"a": "RUNNING"}, "RUNNING")
    response = client._run_api.api_client.call_api(f"/apis/v1beta1/runs/{run_id}", "GET", _preload_content=False)
    manifest = json.loads(json.loads(response.data)["pipeline_runtime"]["workflow_manifest"])
    assert manifest == server.runs[run_id]["_workflow"] and manifest["status"]["phase"] == "Running"


def test_lists_page_sort_and_filter_as_the_api_server_does(server, tmp_path):
    client = plain_client(server)
    for n in range(5):
        (tmp_path / f"p{n}.yaml").write_text(f"pipelineInfo:\n  name: p{n}\n")
        client.upload_pipeline(str(tmp_path / f"p{n}.yaml"), pipeline_name=f"pipe-{n}")
    first = client.list_pipelines(page_size=2, sort_by="created_at desc")
    assert [p.display_name for p in first.pipelines] == ["pipe-4", "pipe-3"] and first.total_size == 5
    second = client.list_pipelines(page_token=first.next_page_token, page_size=2, sort_by="display_name")
    assert [p.display_name for p in second.pipelines] == ["pipe-2", "pipe-1"]  # the token keeps its sort
    last = client.list_pipelines(page_token=second.next_page_token, page_size=2)
    assert [p.display_name for p in last.pipelines] == ["pipe-0"] and not last.next_page_token
    assert [p.display_name for p in client.list_pipelines().pipelines] == [f"pipe-{n}" for n in range(5)]
    some = {"predicates": [{"key": "display_name", "operation": "IN", "string_values": {"values": ["pipe-1", "pipe-3"]}}]}
    assert [p.display_name for p in client.list_pipelines(filter=json.dumps(some)).pipelines] == ["pipe-1", "pipe-3"]
    part = {"predicates": [{"key": "name", "operation": 8, "stringValue": "-4"}]}  # IS_SUBSTRING by number
    assert [p.display_name for p in client.list_pipelines(filter=json.dumps(part)).pipelines] == ["pipe-4"]
    for bad, says in ((dict(sort_by="size desc"), "Invalid sorting field"),
                      (dict(sort_by="created_at down"), "invalid sort by format"),
                      (dict(filter=json.dumps({"predicates": [{"key": "owner", "operation": "EQUALS",
                                                               "string_value": "x"}]})), "unrecognized field")):
        with pytest.raises(kfp_server_api.ApiException) as info:
            client.list_pipelines(**bad)
        assert info.value.status == 400 and says in info.value.body


def test_a_pipeline_with_versions_cannot_be_deleted(server, tmp_path):
    client = plain_client(server)
    (tmp_path / "p.yaml").write_text("pipelineInfo:\n  name: p\n")
    pipeline = client.upload_pipeline(str(tmp_path / "p.yaml"), pipeline_name="p")
    (version,) = client.list_pipeline_versions(pipeline.pipeline_id).pipeline_versions
    with pytest.raises(kfp_server_api.ApiException) as info:
        client.delete_pipeline(pipeline.pipeline_id)
    assert info.value.status == 400 and "has existing pipeline versions" in info.value.body
    client.delete_pipeline_version(pipeline.pipeline_id, version.pipeline_version_id)
    client.delete_pipeline(pipeline.pipeline_id)
    assert server.pipelines == {} and server.versions == {}


def test_terminating_reads_canceling_before_canceled(server, tmp_path):
    client, run_id = started(server, tmp_path, {"a": "RUNNING"}, "RUNNING")
    client.terminate_run(run_id)
    states = [client.get_run(run_id).state for _ in range(server.canceling_polls + 2)]
    assert states == ["CANCELING"] * server.canceling_polls + ["CANCELED", "CANCELED"]


@pytest.mark.parametrize("manifest, node, pod", [
    ({"metadata": {"name": "wf-x"}}, {"id": "wf-x-123", "name": "wf-x.root.a.executor",
                                      "templateName": "system-container-impl"}, "wf-x-system-container-impl-123"),
    ({"metadata": {"name": "wf-x"}}, {"id": "wf-x", "name": "wf-x", "templateName": "entrypoint"}, "wf-x"),
    ({"metadata": {"name": "wf-x"}}, {"id": "wf-x-9", "name": "wf-x.a.inline", "templateName": "t"}, "wf-x-9"),
    ({"metadata": {"name": "wf-x", "annotations": {"workflows.argoproj.io/pod-name-format": "v1"}}},
     {"id": "wf-x-123", "name": "wf-x.root.a.executor", "templateName": "system-container-impl"}, "wf-x-123"),
])
def test_pod_names_are_derived_as_retrieve_pod_name_does(manifest, node, pod):
    from kale_magic.engines.kfp.workflow import Workflow

    assert Workflow(manifest).pod_name(node) == pod == retrieve_pod_name(manifest, node)


# the engine against it ---------------------------------------------------------------------------------
STEP_LOG = """running step train
RuntimeError: step 'train' failed: ZeroDivisionError: division by zero
"""


def test_a_cached_environment_task_leaves_the_steps_that_ran_succeeded(server, tmp_path):
    """Only a step whose own executor the cache skipped is cached; another task's cache hit says nothing."""
    server.script_run(dict(state="SUCCEEDED", tasks={"kale-environment": "CACHED", **ALL_DONE}))
    state = run(server.url, tmp_path)
    assert (state.status, state.error) == ("succeeded", "")
    assert {s.name: s.status for s in state.steps.values()} == {
        "load": "succeeded", "train": "succeeded", "report": "succeeded"}


def test_cached_steps_are_the_ones_whose_executor_was_skipped(server, tmp_path):
    server.script_run(dict(state="SUCCEEDED", tasks={"kale-environment": "SUCCEEDED", "load": "CACHED",
                                                     "train": "SUCCEEDED", "report": "CACHED"}))
    state = run(server.url, tmp_path)
    assert {s.name: (s.status, s.message) for s in state.steps.values()} == {
        "load": ("cached", "KFP cache hit"), "train": ("succeeded", ""), "report": ("cached", "KFP cache hit")}


def test_a_failed_step_says_what_its_pod_printed(server, tmp_path):
    server.script_run(dict(state="FAILED", tasks={"load": "SUCCEEDED", "report": ("FAILED", STEP_LOG)}))
    state = run(server.url, tmp_path)
    assert state.steps["report"].message == "ZeroDivisionError: division by zero"
    assert state.error == "step 'report' failed on Kubeflow Pipelines: ZeroDivisionError: division by zero"
    (read,) = [r for r in server.requests if r.path.endswith("/log")]
    assert read.path.endswith(f"/nodes/{server.pod_of(server.last_run['run_id'], 'report')}/log")


def test_a_step_that_failed_polls_before_the_run_ended_is_still_named(server, tmp_path):
    server.script_run(dict(state="RUNNING", tasks={"load": "SUCCEEDED", "train": ("FAILED", STEP_LOG)}),
                      dict(state="RUNNING", tasks={"load": "SUCCEEDED", "train": ("FAILED", STEP_LOG)}),
                      dict(state="FAILED", tasks={"load": "SUCCEEDED", "train": ("FAILED", STEP_LOG)}))
    state = run(server.url, tmp_path)
    assert state.error == "step 'train' failed on Kubeflow Pipelines: ZeroDivisionError: division by zero"


def test_a_failed_environment_task_is_named_with_what_its_pod_printed(server, tmp_path):
    pip = "Collecting torch==9.9\nERROR: No matching distribution found for torch==9.9\n"
    server.script_run(dict(state="FAILED", error="1 task failed",
                           tasks={"kale-environment": ("FAILED", pip), "load": "PENDING"}))
    state = run(server.url, tmp_path)
    assert state.error == ("task 'kale-environment' failed on Kubeflow Pipelines: "
                           "ERROR: No matching distribution found for torch==9.9")
    assert {s.status for s in state.steps.values()} == {"skipped"}


def test_a_foreach_step_ends_when_all_its_items_have(server, tmp_path):
    """A ParallelFor gives a step one executor DAG per item, all displayed with the task's name: the step
    used to read as succeeded when the first item did, and an item failing later was never reported."""
    seen = []
    server.script_run(dict(state="RUNNING", tasks={"load": "SUCCEEDED", "train": ["SUCCEEDED", "RUNNING"]}),
                      dict(state="FAILED", tasks={"load": "SUCCEEDED", "train": ["SUCCEEDED", ("FAILED", STEP_LOG)]}))
    plan = three_step_plan()
    state = run(server.url, tmp_path, plan=plan, listen=lambda st, event: seen.append(
        (event, st.steps[event[5:]].status)) if event.startswith("step:") else None)
    assert ("step:train", "succeeded") not in seen
    assert state.steps["train"].status == "failed"
    assert state.error == "step 'train' failed on Kubeflow Pipelines: ZeroDivisionError: division by zero"


def test_a_retried_step_reports_its_last_attempt(server, tmp_path):
    """train has --retries 2: its executor is a Retry node; the message is the last attempt's."""
    logs = ["RuntimeError: step 'train' failed: MemoryError: first\n",
            "RuntimeError: step 'train' failed: MemoryError: second\n", STEP_LOG]
    server.script_run(dict(state="FAILED", tasks={"load": "SUCCEEDED", "train": ("FAILED", logs)}))
    state = run(server.url, tmp_path)
    assert state.steps["train"].message == "ZeroDivisionError: division by zero (after 3 attempts)"
    (read,) = [r for r in server.requests if r.path.endswith("/log")]
    assert read.path.endswith(f"/nodes/{server.pod_of(server.last_run['run_id'], 'train')}/log")
    assert server.pod_of(server.last_run["run_id"], "train") != server.pod_of(server.last_run["run_id"], "train", 0)

    server.script_run(dict(state="SUCCEEDED", tasks={**ALL_DONE, "train": ("SUCCEEDED", ["MemoryError\n", "ok\n"])}))
    state = run(server.url, tmp_path / "again", run_id="run-2")
    assert (state.steps["train"].status, state.steps["train"].message) == ("succeeded", "succeeded on attempt 2")


def test_a_step_whose_driver_failed_is_failed_with_the_drivers_words(server, tmp_path):
    """No executor node exists then; the step used to stay pending and read as skipped."""
    driver_log = "I1206 driver.go:270] input ComponentSpec ...\nF1206 main.go:80] KFP driver: failed to resolve inputs\n"
    server.script_run(dict(state="FAILED", tasks={"load": "SUCCEEDED", "train": ("DRIVER_FAILED", driver_log)}))
    state = run(server.url, tmp_path)
    assert state.steps["train"].status == "failed"
    assert state.steps["train"].message == ("the KFP driver failed: F1206 main.go:80] KFP driver: failed to "
                                            "resolve inputs")
    assert state.steps["report"].status == "skipped"


def test_the_engine_polls_at_its_pace_while_the_run_is_canceling(tmp_path):
    """TerminateRun sets CANCELING; the run reads CANCELED once the workflow stopped. The engine keeps its
    poll interval meanwhile (it used to poll without pause once cancel() was called)."""
    with FakeKfpServer(canceling_polls=4) as srv:
        srv.script_run(dict(state="RUNNING", tasks={"load": "RUNNING"}))
        state = run(srv.url, tmp_path, cancel_after="step:load", poll_interval=0.05)
        polls = [r.at for r in srv.requests if r.method == "GET" and r.path.startswith("/apis/v2beta1/runs/")]
        terminated = next(r.at for r in srv.requests if r.path.endswith(":terminate"))
    after = [t for t in polls if t > terminated]
    assert len(after) == 5  # 4 CANCELING, then CANCELED
    assert all(b - a >= 0.05 for a, b in zip(after, after[1:]))
    assert state.error == "the run was canceled in Kubeflow Pipelines"
    assert {s.status for s in state.steps.values()} == {"skipped"}


def test_a_failed_upload_deletes_the_version_then_the_pipeline_and_keeps_the_error(server, tmp_path):
    server.fail("GET", "/apis/v2beta1/pipelines/pipeline-", 503, "versions table locked")
    with pytest.raises(EngineError) as info:
        run(server.url, tmp_path)
    assert "versions table locked" in str(info.value)
    assert server.pipelines == {} and server.versions == {}
    deletes = [r.path for r in server.requests if r.method == "DELETE"]
    assert len(deletes) == 2 and "/versions/" in deletes[0] and "/versions/" not in deletes[1]


def test_a_cleanup_that_fails_too_is_told_after_the_original_error(server, tmp_path):
    server.fail("GET", "/apis/v2beta1/pipelines/pipeline-", 503, "versions table locked")
    server.fail("DELETE", "/apis/v2beta1/pipelines/pipeline-", 500, "database is read-only")
    with pytest.raises(EngineError) as info:
        run(server.url, tmp_path)
    message = str(info.value)
    assert message.index("versions table locked") < message.index("database is read-only")
    (pipeline_id,) = server.pipelines
    assert f"the pipeline 'demo-pipeline' ({pipeline_id}) this upload created could not be deleted" in message


def test_istio_refusing_the_request_is_named(tmp_path):
    with FakeKfpServer(istio_rbac=True) as srv:
        with pytest.raises(EngineError) as info:
            run(srv.url, tmp_path, config={"namespace": "team-a"})
    message = str(info.value)
    assert "HTTP 403: RBAC: access denied" in message and "Istio" in message and "'team-a'" in message


def test_a_namespace_the_user_may_not_use_is_refused_by_the_api_server(tmp_path):
    with FakeKfpServer(multi_user=True, denied_namespaces=("team-a",)) as srv:
        with pytest.raises(EngineError) as info:
            run(srv.url, tmp_path, config={"namespace": "team-a"})
        assert not srv.pipelines and not srv.experiments
    assert "refused the credentials" in str(info.value) and "HTTP 403" in str(info.value)
    assert "PermissionDenied" in str(info.value)


def test_an_upload_the_api_server_refuses_says_what_that_answer_means(tmp_path):
    """pipeline_upload_server.go answers an authorization failure with 400 'Failed to create a pipeline'."""
    with FakeKfpServer(multi_user=True, read_only_namespaces=("team-a",)) as srv:
        srv.experiments["exp-1"] = {"experiment_id": "exp-1", "display_name": "exp-a", "namespace": "team-a",
                                    "description": "", "created_at": "2026-01-01T00:00:00Z",
                                    "storage_state": "AVAILABLE"}
        with pytest.raises(EngineError) as info:
            run(srv.url, tmp_path, config={"namespace": "team-a"})
        assert not srv.pipelines
    message = str(info.value)
    assert "HTTP 400 while uploading the pipeline: Failed to create a pipeline" in message
    assert "may not create pipelines in namespace 'team-a'" in message


def test_with_no_pipeline_root_the_results_are_read_from_kfps_default_root(tmp_path, namespace_store):
    """No Kfp.pipeline_root: KFP writes the run under its default root, the namespace's on a multi-user
    install, where the notebook published kale-magic's runtime and reads the results back with the same
    (namespace) credentials."""
    plan = three_step_plan()
    names = Names(plan)
    prefix = f"private-artifacts/{s3.NAMESPACE}/v2/artifacts/{names.pipeline}"

    with FakeKfpServer(multi_user=True) as srv:
        def cluster(created):
            local = tmp_path / "made" / "X"
            marshal.save(np.arange(3.0), local, name="X")
            out = Names.io(plan.steps["load"])[("out", "X")]
            for path in (p for p in local.rglob("*") if p.is_file()):
                namespace_store.upload_file(str(path), s3.KFP_BUCKET, f"{prefix}/{created['run_id']}/"
                                            f"{names.tasks['load']}/salt/{out}/{path.relative_to(local)}")
            namespace_store.put_object(Bucket=s3.KFP_BUCKET, Body=json.dumps({"acc": 0.5}).encode(),
                                       Key=f"{prefix}/{created['run_id']}/{names.tasks['train']}/salt/{METRICS}")

        srv.on_run_created(cluster)
        srv.script_run(dict(state="SUCCEEDED", tasks=ALL_DONE))
        state = run(srv.url, tmp_path, config={"namespace": s3.NAMESPACE, "install_packages": True})
    assert state.metrics == {"acc": 0.5}, state.error
    files = RunDir(tmp_path / "run")
    assert fetch(files, "load", "X")
    assert np.array_equal(marshal.load(files.value("load", "X")), np.arange(3.0))


def test_a_fully_cached_rerun_reads_metrics_and_values_from_the_run_that_computed_them(tmp_path, s3_env):
    """Runs A (n=4) and B (n=5) compute every step; run C (n=4) is served wholly from KFP's cache, whose
    outputs stay under A's artifact URIs (the newest run with the same fingerprint, not B), pages of runs
    away."""
    plan = three_step_plan()
    names = Names(plan)
    root = f"s3://{s3_env.bucket}/kfp-root"

    with FakeKfpServer() as srv:
        def cluster(created):  # what the steps of a run that executes write, where KFP's launcher puts them
            n = created["runtime_config"]["parameters"]["n"]
            values = {"load": {"X": np.arange(n) * 1.5}, "train": {"model": {"total": n}}}
            prefix = f"kfp-root/{names.pipeline}/{created['run_id']}"
            for step, outputs in values.items():
                for name, value in outputs.items():
                    local = tmp_path / "made" / created["run_id"] / name
                    marshal.save(value, local, name=name)
                    out = Names.io(plan.steps[step])[("out", name)]
                    for path in local.rglob("*"):
                        if path.is_file():
                            key = f"{prefix}/{names.tasks[step]}/salt/{out}/{path.relative_to(local)}"
                            s3_env.client().upload_file(str(path), s3_env.bucket, key)
            s3_env.client().put_object(Bucket=s3_env.bucket, Body=json.dumps({"acc": n / 10}).encode(),
                                       Key=f"{prefix}/{names.tasks['train']}/salt/{METRICS}")

        srv.on_run_created(cluster)
        for n, run_id in ((4, "run-a"), (5, "run-b")):
            srv.script_run(dict(state="SUCCEEDED", tasks=ALL_DONE))
            state = run(srv.url, tmp_path / run_id, parameters={"n": n}, run_id=run_id,
                        config={"pipeline_root": root})
            assert state.metrics == {"acc": n / 10}, state.error
        srv.on_run_created(None)
        client = plain_client(srv)  # more runs since, of another pipeline: A is on the third page of 50
        (tmp_path / "other.yaml").write_text("pipelineInfo:\n  name: other\n")
        other = client.upload_pipeline(str(tmp_path / "other.yaml"), pipeline_name="other")
        version = client.list_pipeline_versions(other.pipeline_id).pipeline_versions[0]
        experiment = client.create_experiment("others").experiment_id
        for n in range(110):
            client.run_pipeline(experiment, f"o{n}", pipeline_id=other.pipeline_id,
                                version_id=version.pipeline_version_id)
        srv.script_run(dict(state="SUCCEEDED", tasks={task: "CACHED" for task in ALL_DONE}))
        state = run(srv.url, tmp_path / "run-c", parameters={"n": 4}, run_id="run-c",
                    config={"pipeline_root": root})
    origin = next(r["run_id"] for r in srv.runs.values() if r["runtime_config"]["parameters"]["n"] == 4)
    assert {s.name: (s.status, s.message) for s in state.steps.values()} == {
        "load": ("cached", f"KFP cache hit: outputs of KFP run {origin}"),
        "train": ("cached", f"KFP cache hit: outputs of KFP run {origin}"),
        "report": ("cached", "KFP cache hit; its values cannot be loaded: no run among the last 500 of this "
                             "pipeline computed it")}  # report saves nothing: no run left outputs of it
    assert state.metrics == {"acc": 0.4}
    files = RunDir(tmp_path / "run-c" / "run")
    assert fetch(files, "load", "X") and fetch(files, "train", "model")
    assert np.array_equal(marshal.load(files.value("load", "X")), np.arange(4) * 1.5)
    assert marshal.load(files.value("train", "model")) == {"total": 4}
