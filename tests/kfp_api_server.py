"""A fake Kubeflow Pipelines API server (REST v2beta1, and the v1 endpoints the engine reads), for tests.

It speaks enough of the API for the real ``kfp.Client``: healthz, experiments, pipeline upload and
upload_version, pipelines and versions, runs, the run log endpoint and the v1beta1 run (with its Argo
workflow). What it answers is re-derived from KFP's own sources (kubeflow/pipelines ``backend/src``):

* **Namespaces** (``resource_manager.go`` ReplaceNamespace). Single-user (default): every namespace sent
  is replaced by ``""``. Multi-user: a list returns exactly the namespace asked for; experiments need one.
* **Lists** (``apiserver/list/list.go``, ``apiserver/filter/filter.go``, ``model/*.go`` field maps):
  ``page_size`` (default 20, at most 200, negative refused), ``page_token``/``next_page_token`` (the
  token carries the sort and filter of the first page), ``sort_by`` ("field", "field desc", "field asc"
  on the model's API fields), ``filter`` (JSON predicates: key, operation as name or number, one of the
  ``*_value(s)`` fields in snake or camel case; an unknown key is refused).
* **Unique names.** A pipeline's (name, namespace) and a version's (pipeline, name) are unique: HTTP 409
  with the upload endpoints' ``error_message`` body.
* **Deleting a pipeline that has versions is refused** (``ResourceManager.DeletePipeline`` without
  ``cascade``): delete its versions first.
* **Authorization.** ``denied_namespaces`` (and, for creating, ``read_only_namespaces``): the API server's
  SubjectAccessReview refuses them: 403 from the gRPC gateway; the upload endpoints answer 400 "Failed to
  create a pipeline" (``pipeline_upload_server.go`` hides the reason). ``istio_rbac=True``: every request gets Istio's plain-text 403
  ``RBAC: access denied``, before KFP sees it.
* **Runs are Argo workflows** (``v2/compiler/argocompiler``): per task a ``<task>-driver`` pod, the
  ``<task>`` DAG (template ``system-container-executor``) and its ``executor`` pod (``system-container-impl``);
  a task with a retry policy gets ``retry-`` templates and its executor is a Retry node whose attempts
  are pods named ``executor(N)``. A cache hit is a Succeeded DAG whose executor was Skipped (its ``when``
  is the driver's cached-decision) and has no pod. Node IDs are ``<workflow>-<fnv32a(node name)>``;
  pod names are ``<workflow>-<template>-<hash>`` (``common/util/workflow.go`` RetrievePodName).
* **Task details** (``api_converter.go`` toModelTasks / toApiPipelineTaskDetail) are the workflow's
  nodes: a random ``task_id``, the node's display name and state, ``child_tasks[].pod_name`` holding the
  children's *node IDs* (not pod names), no ``pod_name`` of their own, no error text, no artifacts.
  The v1beta1 run (``GET /apis/v1beta1/runs/{id}``) carries the workflow JSON as ``workflow_manifest``.
* **Logs** (``run_log_server.go``): ``/apis/v1alpha1/runs/{run}/nodes/{pod}/log`` reads the pod named
  so; anything else (a node ID, a skipped executor) answers 200 with an ``error_message`` body.
* **Terminating** (``run_store.go`` TerminateRun) sets CANCELING; the run reads CANCELED once the
  workflow has stopped (``canceling_polls`` later GETs).
* ``healthz`` reports ``tag_name`` (default 2.17.0) and ``multi_user``.

Tests drive runs: ``set_run`` changes a run's state and its tasks at once, ``script_run`` queues states
that successive ``GET run`` calls walk through. A task is a state (``PENDING``, ``RUNNING``, ``SUCCEEDED``,
``FAILED``, ``CACHED``, ``CANCELED``, ``SKIPPED``), ``(state, log)`` with what its executor pod printed,
or ``(state, [log, ...])``: one log per attempt of a retried executor (earlier attempts failed);
``DRIVER_FAILED`` (or ``("DRIVER_FAILED", log)``) is a task whose KFP driver pod failed, so no executor ran;
a list of those is a ``--foreach`` task, one item per iteration of its ParallelFor.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import itertools
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

API = "/apis/v2beta1"
V1_RUNS = "/apis/v1beta1/runs/"
LOG = "/apis/v1alpha1/runs/"
# what Argo's node phases read as through the API (model.RuntimeState.ToV2); Omitted is UNSPECIFIED
STATE_OF_PHASE = {"Pending": "PENDING", "Running": "RUNNING", "Succeeded": "SUCCEEDED", "Skipped": "SKIPPED",
                  "Failed": "FAILED", "Error": "FAILED", "Omitted": "RUNTIME_STATE_UNSPECIFIED"}
# a task's state as a test gives it -> Argo phases of (driver, executor DAG, executor pod); None: no node yet
NODES_OF_TASK = {"PENDING": ("Pending", None, None), "RUNNING": ("Succeeded", "Running", "Running"),
                 "SUCCEEDED": ("Succeeded", "Succeeded", "Succeeded"), "CACHED": ("Succeeded", "Succeeded", "Skipped"),
                 "FAILED": ("Succeeded", "Failed", "Failed"), "CANCELED": ("Succeeded", "Failed", "Failed"),
                 "SKIPPED": ("Omitted", None, None), "DRIVER_FAILED": ("Failed", None, None)}
RUN_PHASE = {"PENDING": "Pending", "RUNNING": "Running", "SUCCEEDED": "Succeeded", "FAILED": "Failed",
             "CANCELED": "Failed", "CANCELING": "Running", "SKIPPED": "Skipped"}
# the API fields each model can be sorted and filtered by (model/<kind>.go APIToModelFieldMap, v2beta1)
FIELDS = {"pipelines": ("pipeline_id", "display_name", "name", "created_at", "description", "namespace"),
          "versions": ("pipeline_version_id", "display_name", "name", "created_at", "description"),
          "experiments": ("experiment_id", "display_name", "created_at", "description", "namespace",
                          "storage_state"),
          "runs": ("run_id", "display_name", "created_at", "description", "namespace", "experiment_id", "state",
                   "storage_state"),
          "recurring_runs": ("recurring_run_id", "display_name", "created_at", "updated_at", "description",
                             "namespace", "experiment_id", "status")}
KEY_FIELD = {"pipelines": "pipeline_id", "versions": "pipeline_version_id", "experiments": "experiment_id",
             "runs": "run_id", "recurring_runs": "recurring_run_id"}
OPERATIONS = ["UNKNOWN", "EQUALS", "NOT_EQUALS", "GREATER_THAN", "GREATER_THAN_EQUALS", "LESS_THAN",
              "LESS_THAN_EQUALS", "IN", "IS_SUBSTRING"]  # filter.proto's enum, in order
DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 20, 200
RBAC_DENIED = "RBAC: access denied"


@dataclass
class Recorded:
    """One request as the server received it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: object = None
    files: dict[str, bytes] = field(default_factory=dict)
    at: float = field(default_factory=time.monotonic)  # when it arrived


class ApiError(Exception):
    """An error of the gRPC gateway (JSON with ``error``, ``code``, ``message``)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message

    def body(self) -> object:
        return {"error": self.message, "code": _grpc_code(self.status), "message": self.message, "details": []}


class UploadError(ApiError):
    """An error of the upload endpoints, which are plain HTTP handlers (``error_message``, ``error_details``)."""

    def body(self) -> object:
        return {"error_message": self.message, "error_details": self.message}


class RecurringRunApi:
    """The recurring-run calls (``/apis/v2beta1/recurringruns``), kept apart from the rest of the server.

    As ``recurring_run_server.go`` and the resource manager answer them: create validates the pipeline
    version, ``max_concurrency`` (1-10: "The max concurrency of the recurring run is out of range. Support
    1-10. Received N.") and the cron (robfig/cron's ``Parse``: five or six fields or a descriptor; else
    "Schedule cron is not a supported format(https://godoc.org/github.com/robfig/cron)"); ``mode`` ENABLE
    enables it, anything else (unspecified too) leaves it disabled; multi-user needs a namespace ("Recurring
    run has no namespace."). The status reads ENABLED/DISABLED at once (as after the persistence agent's
    sync). List filters by namespace or experiment; ``:enable``/``:disable`` flip mode and status; delete
    removes it. ``fire_schedule`` is the ScheduledWorkflow controller starting a run (its
    ``recurring_run_id`` set).
    """

    @property
    def recurring_runs(self) -> dict[str, dict]:
        if not hasattr(self, "_recurring_runs"):
            self._recurring_runs = {}
        return self._recurring_runs

    def fire_schedule(self, recurring_run_id: str, state: str = "SUCCEEDED") -> dict:
        """Start a run of the schedule, as its controller does at a fire time; the run ends in ``state``."""
        with self._lock:
            job = self.recurring_runs[recurring_run_id]
            run = self._create_run({"display_name": f"{job['display_name']}-{next(self._ids)}",
                                    "experiment_id": job["experiment_id"],
                                    "pipeline_version_reference": job["pipeline_version_reference"],
                                    "runtime_config": job["runtime_config"]})
            self.runs[run["run_id"]]["recurring_run_id"] = recurring_run_id
            self._apply(self.runs[run["run_id"]], {"state": state, "tasks": None})
            return self._public_run(self.runs[run["run_id"]])

    def _recurring_run_routes(self, rec: Recorded, parts: list[str]) -> dict:
        ident, _, action = parts[1].partition(":") if len(parts) > 1 else ("", "", "")
        return {
            ("POST", "recurringruns", 1): lambda: self._create_recurring_run(rec.json or {}),
            ("GET", "recurringruns", 1): lambda: self._list_recurring_runs(rec),
            ("GET", "recurringruns", 2): lambda: self._get(self.recurring_runs, ident),
            ("POST", "recurringruns", 2): lambda: self._recurring_run_action(ident, action),
            ("DELETE", "recurringruns", 2): lambda: self._delete_recurring_run(ident),
        }

    def _create_recurring_run(self, body: dict) -> dict:
        ref = body.get("pipeline_version_reference") or {}
        if not ref and not body.get("pipeline_spec"):
            raise ApiError(400, "Validate create job request failed: Invalid input error: Neither pipeline spec "
                                "nor pipeline version is provided")
        if ref and ref.get("pipeline_version_id") not in self.versions:
            raise ApiError(404, f"Pipeline version {ref.get('pipeline_version_id')} not found")
        concurrency = int(body.get("max_concurrency") or 0)
        if not 1 <= concurrency <= 10:
            raise ApiError(400, "Validate create job request failed: Invalid input error: The max concurrency of "
                                f"the recurring run is out of range. Support 1-10. Received {concurrency}.")
        cron = ((body.get("trigger") or {}).get("cron_schedule") or {}).get("cron")
        if cron is not None and not _robfig_parses(cron):
            raise ApiError(400, "Validate create job request failed: Invalid input error: Schedule cron is not a "
                                "supported format(https://godoc.org/github.com/robfig/cron). Error: " + cron)
        if body.get("experiment_id") and body["experiment_id"] not in self.experiments:
            raise ApiError(404, f"Experiment {body['experiment_id']} not found")
        namespace = self._namespace(body.get("namespace")
                                    or self.experiments.get(body.get("experiment_id"), {}).get("namespace"))
        if self.multi_user and not namespace:
            raise ApiError(400, "Validate create job request failed: Invalid input error: Recurring run has no "
                                "namespace.")
        enabled = body.get("mode") == "ENABLE"
        job_time = self._now()
        job = {"recurring_run_id": self._new_id("recurring"), "display_name": body.get("display_name", ""),
               "description": body.get("description") or "", "pipeline_version_reference": ref,
               "runtime_config": body.get("runtime_config") or {}, "max_concurrency": str(concurrency),
               "trigger": body.get("trigger") or {}, "no_catchup": bool(body.get("no_catchup")),
               "namespace": namespace, "experiment_id": body.get("experiment_id", ""), "created_at": job_time,
               "updated_at": job_time, "mode": "ENABLE" if enabled else "DISABLE",
               "status": "ENABLED" if enabled else "DISABLED"}
        self.recurring_runs[job["recurring_run_id"]] = job
        return job

    def _list_recurring_runs(self, rec: Recorded) -> dict:
        jobs = list(self.recurring_runs.values())
        if rec.query.get("experiment_id"):
            jobs = [j for j in jobs if j["experiment_id"] == rec.query["experiment_id"]]
        else:
            jobs = [j for j in jobs if j["namespace"] == self._namespace(rec.query.get("namespace"))]
        return self._list(rec, "recurring_runs", jobs)

    def _recurring_run_action(self, ident: str, action: str) -> dict:
        job = self._get(self.recurring_runs, ident)
        if action not in ("enable", "disable"):
            raise ApiError(404, f"Not Found: recurring run action {action!r}")
        job["mode"], job["status"] = ("ENABLE", "ENABLED") if action == "enable" else ("DISABLE", "DISABLED")
        return {}

    def _delete_recurring_run(self, ident: str) -> dict:
        self._get(self.recurring_runs, ident)
        del self.recurring_runs[ident]
        return {}


_ROBFIG_DESCRIPTORS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")


def _robfig_parses(cron: str) -> bool:
    """robfig/cron v1 ``Parse``: a descriptor, or 5-6 fields of numbers, names, ranges, lists, steps, * and ?."""
    import re

    if cron.startswith("@"):
        return cron in _ROBFIG_DESCRIPTORS or bool(re.fullmatch(r"@every ((\d+(\.\d+)?(h|m|s|ms))+)", cron))
    fields = cron.split()
    field = r"(\*|\?|[0-9A-Za-z]+(-[0-9A-Za-z]+)?)(/\d+)?"
    return len(fields) in (5, 6) and all(re.fullmatch(rf"{field}(,{field})*", f) for f in fields)


class PlainError(ApiError):
    """What a proxy in front of KFP answers (Istio's RBAC filter): plain text."""

    def body(self) -> object:
        return self.message


class FakeKfpServer(RecurringRunApi):
    """Threaded HTTP server on 127.0.0.1 with the state of a tiny KFP installation."""

    def __init__(self, *, token: str | None = None, multi_user: bool = False, version: str = "2.17.0",
                 denied_namespaces: tuple[str, ...] = (), read_only_namespaces: tuple[str, ...] = (),
                 istio_rbac: bool = False, canceling_polls: int = 2):
        self.token = token  # when set, requests need "Authorization: Bearer <token>"
        self.multi_user = multi_user
        self.version = version
        self.denied_namespaces = set(denied_namespaces)  # the user may do nothing there
        self.read_only_namespaces = set(read_only_namespaces)  # the user may list and get, not create
        self.istio_rbac = istio_rbac
        self.canceling_polls = canceling_polls
        self.requests: list[Recorded] = []
        self.experiments: dict[str, dict] = {}
        self.pipelines: dict[str, dict] = {}
        self.versions: dict[str, dict] = {}  # version id -> version (with "spec_text")
        self.runs: dict[str, dict] = {}
        self.logs: dict[str, str] = {}  # pod name -> what it printed
        self._scripts: dict[str, list[dict]] = {}
        self._on_create = None
        self._failures: list[list] = []  # [method, path prefix, status, message, times]
        self._ids = itertools.count(1)
        self._seconds = itertools.count(1)
        self._lock = threading.RLock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle -----------------------------------------------------------
    def start(self) -> "FakeKfpServer":
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._httpd.daemon_threads = True
        # stop() waits until serve_forever looks for a shutdown request: every 0.5 s by default, which
        # added half a second to every test using this server
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> "FakeKfpServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    # test controls -------------------------------------------------------
    def fail(self, method: str, path_prefix: str, status: int, message: str, times: int = 1) -> None:
        """Answer the next ``times`` matching requests with an error in KFP's JSON shape."""
        with self._lock:
            self._failures.append([method, path_prefix, status, message, times])

    def set_run(self, run_id: str, state: str, tasks: dict | None = None, error: str | None = None) -> None:
        """Set a run's state; ``tasks`` maps task name -> state, (state, log) or (state, [log per attempt])."""
        with self._lock:
            self._apply(self.runs[run_id], {"state": state, "tasks": tasks, "error": error})

    def script_run(self, *states: dict) -> None:
        """Queue states for the next run created; each ``GET run`` applies the next one.

        Each item is ``dict(state=..., tasks={...}, error=...)``; the last one stays.
        """
        with self._lock:
            self._scripts["next"] = list(states)

    def on_run_created(self, callback) -> None:
        """Call ``callback(run)`` in a thread when a run is created (the cluster doing the work: e.g. run the
        uploaded YAML and put its outputs in the object store); the run reads RUNNING until it returns."""
        self._on_create = callback

    def requests_to(self, method: str, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path == path]

    @property
    def last_run(self) -> dict:
        return list(self.runs.values())[-1]

    def spec_of(self, version_id: str) -> str:
        return self.versions[version_id]["spec_text"]

    def pod_of(self, run_id: str, task: str, attempt: int | None = None) -> str:
        """The name of a task's executor pod (its last attempt's, or attempt ``attempt``)."""
        workflow = self.runs[run_id]["_workflow"]
        nodes = workflow["status"]["nodes"]
        executor = nodes[_node_id(workflow, f"{workflow['metadata']['name']}.root.{task}.executor")]
        if executor["type"] == "Retry":
            children = executor["children"]
            executor = nodes[children[-1 if attempt is None else attempt]]
        return retrieve_pod_name(workflow, executor)

    # request handling ----------------------------------------------------
    def handle(self, rec: Recorded) -> tuple[int, object]:
        with self._lock:
            self.requests.append(rec)
            try:
                self._check(rec)
                if rec.path.startswith(LOG):
                    return 200, self._log(rec.path)
                if rec.path.startswith(V1_RUNS) and rec.method == "GET":
                    return 200, self._v1_run(rec.path[len(V1_RUNS):])
                return 200, self._route(rec)
            except ApiError as err:
                return err.status, err.body()

    def _check(self, rec: Recorded) -> None:
        if self.istio_rbac:
            raise PlainError(403, RBAC_DENIED)
        if self.token and rec.headers.get("authorization") != f"Bearer {self.token}":
            raise ApiError(401, "Unauthenticated: missing or invalid bearer token")
        for failure in self._failures:
            method, prefix, status, message, times = failure
            if times > 0 and rec.method == method and rec.path.startswith(prefix):
                failure[4] -= 1
                raise (UploadError if "/upload" in rec.path else ApiError)(status, message)

    def _authorize(self, namespace: str, upload: str | None = None, create: bool = False) -> None:
        """The SubjectAccessReview of ``resource_manager.go`` IsAuthorized; the upload endpoints hide it."""
        refused = self.denied_namespaces | (self.read_only_namespaces if create or upload else set())
        if self.multi_user and namespace in refused:
            if upload:
                raise UploadError(400, upload)
            raise ApiError(403, f"Failed to authorize with API: PermissionDenied: User 'user@example.com' is not "
                                f"authorized with reason:  (request: &ResourceAttributes{{Namespace:{namespace},"
                                f"Verb:create,Group:pipelines.kubeflow.org}})")

    def _route(self, rec: Recorded) -> object:
        parts = rec.path[len(API):].strip("/").split("/") if rec.path.startswith(API) else []
        key = (rec.method, parts[0] if parts else "", len(parts))
        routes = {
            ("GET", "healthz", 1): lambda: {"commit_sha": "0" * 40, "tag_name": self.version,
                                            "multi_user": self.multi_user},
            ("POST", "experiments", 1): lambda: self._create_experiment(rec.json),
            ("GET", "experiments", 1): lambda: self._list_experiments(rec),
            ("GET", "experiments", 2): lambda: self._get(self.experiments, parts[1]),
            ("POST", "pipelines", 2): lambda: self._upload(rec, parts[1]),
            ("GET", "pipelines", 1): lambda: self._list(rec, "pipelines", self._in_namespace(self.pipelines, rec)),
            ("GET", "pipelines", 2): lambda: self._get(self.pipelines, parts[1]),
            ("DELETE", "pipelines", 2): lambda: self._delete_pipeline(parts[1]),
            ("GET", "pipelines", 3): lambda: self._list(rec, "versions", self._versions_of(parts[1])),
            ("GET", "pipelines", 4): lambda: self._version_with_spec(self._get(self.versions, parts[3])),
            ("DELETE", "pipelines", 4): lambda: self._delete_version(parts[1], parts[3]),
            ("POST", "runs", 1): lambda: self._create_run(rec.json),
            ("GET", "runs", 1): lambda: self._list(rec, "runs", [self._public_run(r) for r in self._runs_in(rec)]),
            ("GET", "runs", 2): lambda: self._get_run(parts[1]),
            ("POST", "runs", 2): lambda: self._run_action(*parts[1].partition(":")[::2]),
        }
        routes.update(self._recurring_run_routes(rec, parts))
        if key not in routes:
            raise ApiError(404, f"Not Found: {rec.method} {rec.path}")
        return routes[key]()

    def _new_id(self, kind: str) -> str:
        return f"{kind}-{next(self._ids)}"

    def _now(self) -> str:
        """Creation times one second apart, so that sorting by created_at means something."""
        from datetime import datetime, timedelta

        return (datetime(2026, 1, 1) + timedelta(seconds=next(self._seconds))).strftime("%Y-%m-%dT%H:%M:%SZ")

    @staticmethod
    def _get(table: dict, ident: str) -> dict:
        if ident not in table:
            raise ApiError(404, f"{ident} not found")
        return table[ident]

    def _namespace(self, namespace: str | None) -> str:
        """``ResourceManager.ReplaceNamespace``: single-user installations have no namespaces."""
        return (namespace or "") if self.multi_user else ""

    def _in_namespace(self, table: dict, rec: Recorded) -> list[dict]:
        """Exactly the namespace asked for (the real list filters ``Namespace = ?``, shared ones are "")."""
        namespace = self._namespace(rec.query.get("namespace"))
        if namespace:
            self._authorize(namespace)
        return [item for item in table.values() if item["namespace"] == namespace]

    def _runs_in(self, rec: Recorded) -> list[dict]:
        namespace = self._namespace(rec.query.get("namespace"))
        experiment = rec.query.get("experiment_id")
        return [r for r in self.runs.values() if (not experiment or r["experiment_id"] == experiment)
                and (not self.multi_user or not namespace or self._run_namespace(r) == namespace)]

    def _run_namespace(self, run: dict) -> str:
        experiment = self.experiments.get(run["experiment_id"])
        return experiment["namespace"] if experiment else ""

    # lists: page_size, page_token, sort_by, filter ------------------------
    def _list(self, rec: Recorded, kind: str, items: list[dict]) -> dict:
        """One page of ``items`` as ``apiserver/list/list.go`` cuts it."""
        try:
            size = int(rec.query.get("page_size") or 0)
        except ValueError:
            raise ApiError(400, f"Invalid input error: page_size {rec.query['page_size']!r}") from None
        if size < 0:
            raise ApiError(400, f"Invalid input error: The page size should be greater than 0. Got {size}")
        size = min(size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        if rec.query.get("page_token"):
            try:
                token = json.loads(base64.b64decode(rec.query["page_token"]))
            except ValueError:
                raise ApiError(400, "Invalid input error: Invalid page token") from None
        else:  # a token carries the first page's sort and filter; later requests' are ignored
            token = {"sort": _sort_by(kind, rec.query.get("sort_by", "")), "filter": rec.query.get("filter") or "",
                     "offset": 0}
        field_name, desc = token["sort"]
        key = KEY_FIELD[kind]
        chosen = sorted(_filtered(kind, items, token["filter"]), key=lambda i: (str(i.get(field_name, "")),
                                                                              str(i[key])), reverse=desc)
        start = token["offset"]
        page = chosen[start:start + size]
        out = {{"pipelines": "pipelines", "versions": "pipeline_versions", "experiments": "experiments",
                "runs": "runs", "recurring_runs": "recurringRuns"}[kind]: [self._public(i) for i in page], "total_size": len(chosen)}
        if start + size < len(chosen):
            out["next_page_token"] = base64.b64encode(json.dumps(dict(token, offset=start + size)).encode()).decode()
        return out

    def _list_experiments(self, rec: Recorded) -> dict:
        if self.multi_user and not rec.query.get("namespace"):
            raise ApiError(400, "Failed to authorize with API: Invalid input error: "
                                "An experiment cannot have an empty namespace in multi-user mode")
        return self._list(rec, "experiments", self._in_namespace(self.experiments, rec))

    def _create_experiment(self, body: dict) -> dict:
        if not body.get("display_name"):
            raise ApiError(400, "Invalid input error: experiment display_name is empty")
        namespace = self._namespace(body.get("namespace"))
        if self.multi_user and not namespace:
            raise ApiError(400, "Failed to authorize the request: Invalid input error: "
                                "An experiment cannot have an empty namespace in multi-user mode")
        self._authorize(namespace, create=True)
        if any((e["display_name"], e["namespace"]) == (body["display_name"], namespace)
               for e in self.experiments.values()):
            raise ApiError(409, f"Already exist error: Failed to create a new experiment. The name "
                                f"{body['display_name']} already exists. Please specify a new name")
        exp = {"experiment_id": self._new_id("exp"), "display_name": body["display_name"],
               "namespace": namespace, "description": body.get("description") or "",
               "created_at": self._now(), "storage_state": "AVAILABLE"}
        self.experiments[exp["experiment_id"]] = exp
        return exp

    def _upload(self, rec: Recorded, action: str) -> dict:
        spec = rec.files.get("uploadfile")
        if spec is None:
            raise UploadError(400, "Failed to read pipeline from file")
        name = rec.query.get("name") or rec.query.get("display_name")
        if action == "upload":
            namespace = self._namespace(rec.query.get("namespace"))
            self._authorize(namespace, upload="Failed to create a pipeline")
            if any((p["name"], p["namespace"]) == (name, namespace) for p in self.pipelines.values()):
                raise UploadError(409, "Failed to create a pipeline and a pipeline version")  # (name, namespace)
            pipeline = {"pipeline_id": self._new_id("pipeline"), "display_name": name, "name": name,
                        "description": rec.query.get("description", ""), "namespace": namespace,
                        "created_at": self._now()}
            self.pipelines[pipeline["pipeline_id"]] = pipeline
            self._add_version(pipeline["pipeline_id"], name, spec)
            return pipeline
        if action == "upload_version":
            pipeline_id = rec.query.get("pipelineid")
            if pipeline_id not in self.pipelines:
                raise UploadError(400, "Failed to create a pipeline version")
            self._authorize(self.pipelines[pipeline_id]["namespace"], upload="Failed to create a pipeline version")
            if any((v["pipeline_id"], v["name"]) == (pipeline_id, name) for v in self.versions.values()):
                raise UploadError(409, "Failed to create a pipeline version")
            return self._public(self._add_version(pipeline_id, name, spec))
        raise ApiError(404, f"Not Found: POST {rec.path}")

    def _add_version(self, pipeline_id: str, name: str, spec: bytes) -> dict:
        version = {"pipeline_version_id": self._new_id("version"), "pipeline_id": pipeline_id,
                   "display_name": name, "name": name, "created_at": self._now(),
                   "spec_text": spec.decode()}
        self.versions[version["pipeline_version_id"]] = version
        return version

    @staticmethod
    def _public(item: dict) -> dict:
        return {k: v for k, v in item.items() if k != "spec_text" and not k.startswith("_")}

    def _version_with_spec(self, version: dict) -> dict:
        """GET version: with ``pipeline_spec`` as ``YamlStringToPipelineSpecStruct`` (api_util.go) makes it."""
        docs = [d for d in _docs(version["spec_text"]) if isinstance(d, dict)]
        platform = [d for d in docs if "platforms" in d]
        spec = next((d for d in docs if "platforms" not in d), None)
        return dict(self._public(version), pipeline_spec={"pipeline_spec": spec, "platform_spec": platform[0]}
                    if platform else spec)

    def _versions_of(self, pipeline_id: str) -> list[dict]:
        self._get(self.pipelines, pipeline_id)
        return [v for v in self.versions.values() if v["pipeline_id"] == pipeline_id]

    def _delete_pipeline(self, pipeline_id: str) -> dict:
        """Refused while the pipeline has versions (``ResourceManager.DeletePipeline``, cascade unset)."""
        self._get(self.pipelines, pipeline_id)
        versions = self._versions_of(pipeline_id)
        if versions:
            latest = max(versions, key=lambda v: v["created_at"])["pipeline_version_id"]
            raise ApiError(400, f"Failed to delete pipeline {pipeline_id}. Check error stack: Invalid input error: "
                                f"Failed to delete pipeline with id {pipeline_id} as it has existing pipeline "
                                f"versions (e.g. {latest}). Set cascade=true to delete all versions")
        del self.pipelines[pipeline_id]
        return {}

    def _delete_version(self, pipeline_id: str, version_id: str) -> dict:
        version = self._get(self.versions, version_id)
        if version["pipeline_id"] != pipeline_id:
            raise ApiError(404, f"{version_id} not found")
        del self.versions[version_id]
        return {}

    # runs ----------------------------------------------------------------
    def _create_run(self, body: dict) -> dict:
        ref = body.get("pipeline_version_reference") or {}
        if ref and ref.get("pipeline_version_id") not in self.versions:
            raise ApiError(404, f"Pipeline version {ref.get('pipeline_version_id')} not found")
        if body.get("experiment_id") and body["experiment_id"] not in self.experiments:
            raise ApiError(404, f"Experiment {body['experiment_id']} not found")
        if self.multi_user and not body.get("experiment_id"):
            raise ApiError(400, "Invalid input error: Resource cannot have an empty namespace and experiment id "
                                "in multi-user mode")
        if body.get("experiment_id"):
            self._authorize(self.experiments[body["experiment_id"]]["namespace"], create=True)
        number = next(self._ids)
        spec = _spec(self.versions[ref["pipeline_version_id"]]["spec_text"]) if ref else {}
        name = (spec.get("pipelineInfo") or {}).get("name") or "pipeline"
        run = {"run_id": f"run-{number}", "display_name": body.get("display_name", ""),
               "experiment_id": body.get("experiment_id", ""), "pipeline_version_reference": ref,
               "runtime_config": body.get("runtime_config") or {}, "storage_state": "AVAILABLE",
               "created_at": self._now(), "state": "PENDING", "_tasks": {}, "_canceling": 0,
               "_retried": {task for task, t in ((spec.get("root") or {}).get("dag") or {}).get("tasks", {}).items()
                            if t.get("retryPolicy")},
               "_workflow": {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
                             "metadata": {"name": f"{name}-{number:05d}"[-63:], "annotations": {}},
                             "status": {"phase": "Pending", "nodes": {}}}}
        self.runs[run["run_id"]] = run
        if "next" in self._scripts:
            self._scripts[run["run_id"]] = self._scripts.pop("next")
        if self._on_create is not None:
            run["_busy"] = threading.Thread(target=self._on_create, args=(self._public(run),), daemon=True)
            run["_busy"].start()
        return self._public_run(run)

    def _run_action(self, run_id: str, action: str) -> dict:
        run = self._get(self.runs, run_id)
        if action != "terminate":
            raise ApiError(404, f"Not Found: run action {action!r}")
        if run["state"] in ("PENDING", "RUNNING"):  # run_store.go TerminateRun
            self._scripts.pop(run_id, None)
            run["state"], run["_canceling"] = "CANCELING", self.canceling_polls
        return {}

    def _get_run(self, run_id: str) -> dict:
        run = self._get(self.runs, run_id)
        if run["state"] == "CANCELING":
            run["_canceling"] -= 1
            if run["_canceling"] < 0:  # the workflow stopped: its running pods failed
                self._apply(run, {"state": "CANCELED", "tasks": {
                    name: "CANCELED" if _state(value) in ("PENDING", "RUNNING") else value
                    for name, value in run["_tasks"].items()}})
            return self._public_run(run)
        if run.get("_busy") is not None and run["_busy"].is_alive():
            self._apply(run, {"state": "RUNNING", "tasks": {}})
            return self._public_run(run)
        script = self._scripts.get(run_id)
        if script:
            self._apply(run, script.pop(0) if len(script) > 1 else script[0])
        return self._public_run(run)

    def _v1_run(self, run_id: str) -> dict:
        """``GET /apis/v1beta1/runs/{id}``: the run detail with the workflow as ``workflow_manifest``."""
        run = self._get(self.runs, run_id.strip("/"))
        return {"run": {"id": run["run_id"], "name": run["display_name"], "status": RUN_PHASE.get(run["state"], "")},
                "pipeline_runtime": {"workflow_manifest": json.dumps(run["_workflow"]) if run["_tasks"] else ""}}

    def _apply(self, run: dict, change: dict) -> None:
        run["state"] = change["state"]
        if change.get("error"):
            run["error"] = {"code": 2, "message": change["error"]}
        if change.get("tasks") is not None:
            run["_tasks"] = dict(change["tasks"])
        _build_workflow(run, self.logs)

    def _public_run(self, run: dict) -> dict:
        out = self._public(run)
        out["run_details"] = {"task_details": _task_details(run)}
        return out

    def _log(self, path: str) -> object:
        """The run log endpoint: a pod's log as text; without such a pod, 200 and an error body (as KFP)."""
        run_id, _, rest = unquote(path[len(LOG):]).partition("/nodes/")
        pod = rest.removesuffix("/log")
        if run_id in self.runs and pod in self.logs:
            return self.logs[pod]
        return {"error_message": f"Failed to read logs for run {run_id}: Internal Server Error: Failed to "
                                 f"read logs from pod {pod} due to error opening log stream: pods \"{pod}\" not found",
                "error_details": "pods not found"}


def _state(value) -> str:
    return value[0] if isinstance(value, tuple) else value


def _docs(text: str) -> list:
    import yaml

    try:
        return list(yaml.safe_load_all(text))
    except yaml.YAMLError:
        return []


def _spec(text: str) -> dict:
    docs = _docs(text)
    return docs[0] if docs and isinstance(docs[0], dict) else {}


def _fnv32a(text: str) -> int:
    h = 0x811C9DC5
    for byte in text.encode():
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return h


def _node_id(workflow: dict, name: str) -> str:
    """Argo's ``Workflow.NodeID``: the workflow's name, then the FNV-32a hash of the node's name."""
    wf = workflow["metadata"]["name"]
    return wf if name == wf else f"{wf}-{_fnv32a(name)}"


def retrieve_pod_name(workflow: dict, node: dict) -> str:
    """``common/util/workflow.go`` RetrievePodName (and the frontend's ``getNodeNameFromNodeId``)."""
    if workflow.get("apiVersion") == "v1" or \
            workflow["metadata"].get("annotations", {}).get("workflows.argoproj.io/pod-name-format") == "v1":
        return node["id"]
    wf = workflow["metadata"]["name"]
    if node["name"] == wf:
        return wf
    prefix = wf if ".inline" in node["name"] else f"{wf}-{node['templateName']}"
    return f"{prefix}-{node['id'].split('-')[-1]}"


def _build_workflow(run: dict, logs: dict) -> None:
    """The Argo workflow the argocompiler makes of the run's tasks, and its pods' logs."""
    workflow = run["_workflow"]
    wf = workflow["metadata"]["name"]
    phase = RUN_PHASE.get(run["state"], "Running")
    nodes: dict[str, dict] = {}

    def add(name, display, template, node_type, node_phase, parent=None, **extra):
        node = {"id": _node_id(workflow, name), "name": name, "displayName": display, "templateName": template,
                "type": node_type, "phase": node_phase, "children": [], **extra}
        nodes[node["id"]] = node
        if parent is not None:
            parent["children"].append(node["id"])
        return node

    if run["_tasks"] or run["state"] != "PENDING":
        top = add(wf, wf, "entrypoint", "DAG", phase)
        add(f"{wf}.root-driver", "root-driver", "system-dag-driver", "Pod", "Succeeded", top)
        root = add(f"{wf}.root", "root", "root", "DAG", phase, top)
    for task, value in run["_tasks"].items():
        retried = task in run["_retried"] or isinstance(value, tuple) and isinstance(value[1], list)
        if not isinstance(value, list):
            _task_nodes(add, workflow, f"{wf}.root", root, task, value, retried, logs)
            continue
        # --foreach: a ParallelFor's iterations DAG, then one DAG per item holding the task's nodes
        loop = add(f"{wf}.root.for-loop-{task}-iterations", f"for-loop-{task}-iterations", "comp-for-loop", "DAG",
                   "Running", root)
        for i, item in enumerate(value):
            iteration = add(f"{loop['name']}({i})", f"for-loop-{task}-iterations({i})", "comp-for-loop", "DAG",
                            "Running", loop)
            _task_nodes(add, workflow, iteration["name"], iteration, task, item, retried, logs)
    workflow["status"] = {"phase": phase, "nodes": nodes}


def _task_nodes(add, workflow: dict, parent_name: str, parent: dict, task: str, value, retried: bool,
                logs: dict) -> None:
    """One task's nodes under ``parent``: its driver pod, its executor DAG and the executor (pod, Retry node
    with a pod per attempt, or Skipped for a cache hit)."""
    driver, dag_phase, executor_phase = NODES_OF_TASK[_state(value)]
    prefix = "retry-" if retried else ""
    cached = "true" if executor_phase == "Skipped" else "false"
    driver_node = add(f"{parent_name}.{task}-driver", f"{task}-driver", "system-container-driver", "Pod", driver,
                      parent, outputs={"parameters": [{"name": "cached-decision", "value": cached}]}
                      if driver == "Succeeded" else {}, **({"message": "Error (exit code 1)"}
                                                           if driver == "Failed" else {}))
    if dag_phase is None:
        if driver == "Failed" and isinstance(value, tuple):
            logs[retrieve_pod_name(workflow, driver_node)] = value[1]
        return
    dag = add(f"{parent_name}.{task}", task, f"{prefix}system-container-executor", "DAG", dag_phase, parent)
    name = f"{parent_name}.{task}.executor"
    if executor_phase == "Skipped":
        add(name, "executor", f"{prefix}system-container-impl", "Skipped", "Skipped", dag,
            message="when 'true != true' evaluated false")
        return
    printed = value[1] if isinstance(value, tuple) else None
    attempts = printed if isinstance(printed, list) else [printed]
    if retried:
        retry = add(name, "executor", f"{prefix}system-container-impl", "Retry", executor_phase, dag)
        pods = [add(f"{name}({i})", f"executor({i})", f"{prefix}system-container-impl", "Pod",
                    executor_phase if i == len(attempts) - 1 else "Failed", retry) for i in range(len(attempts))]
    else:
        pods = [add(name, "executor", "system-container-impl", "Pod", executor_phase, dag)]
    for pod, text in zip(pods, attempts):
        pod_name = retrieve_pod_name(workflow, pod)
        if text is not None:
            logs[pod_name] = text
        elif pod["phase"] in ("Running", "Succeeded", "Failed"):
            logs.setdefault(pod_name, f"running step {task}\n")


def _task_details(run: dict) -> list[dict]:
    """The run's task details as ``toModelTasks`` + ``toApiPipelineTaskDetail`` build them from its nodes."""
    nodes = run["_workflow"]["status"]["nodes"]
    details = []
    for node_id in sorted(nodes):
        node = nodes[node_id]
        details.append({"run_id": run["run_id"], "task_id": str(uuid.uuid5(uuid.NAMESPACE_OID, node_id)),
                        "display_name": node["displayName"], "create_time": run["created_at"],
                        "start_time": run["created_at"], "end_time": run["created_at"],
                        "state": STATE_OF_PHASE[node["phase"]], "execution_id": "0",
                        "child_tasks": [{"pod_name": child} for child in node["children"]]})
    return details


def _sort_by(kind: str, sort_by: str) -> tuple[str, bool]:
    """``list.NewOptions``: "field", "field desc" or "field asc"; by default oldest first."""
    parts = sort_by.split()
    if not parts:
        return "created_at", False
    if len(parts) > 2 or len(parts) == 2 and parts[1] not in ("asc", "desc"):
        raise ApiError(400, f'Invalid input error: Received invalid sort by format "{sort_by}". Supported format: '
                            '"field_name", "field_name desc", or "field_name asc"')
    if parts[0] not in FIELDS[kind]:
        raise ApiError(400, f'Invalid input error: Invalid sorting field: "{parts[0]}" on listable type {kind}')
    return parts[0], len(parts) == 2 and parts[1] == "desc"


def _filtered(kind: str, items: list[dict], text: str) -> list[dict]:
    """``filter.NewWithKeyMap`` and ``filter.AddToSelect``: every predicate must hold."""
    try:
        predicates = json.loads(text or "{}").get("predicates") or []
    except (ValueError, AttributeError):
        raise ApiError(400, f"Invalid input error: failed to parse valid filter from {text!r}") from None
    for pred in predicates:
        key = pred.get("key")
        if key not in FIELDS[kind]:
            raise ApiError(400, f'Invalid input error: no support for filtering on unrecognized field "{key}"')
        op = pred.get("operation") or pred.get("op") or "UNKNOWN"
        op = OPERATIONS[op] if isinstance(op, int) else op
        value = _predicate_value(pred)
        tests = {"EQUALS": lambda v: v == value, "NOT_EQUALS": lambda v: v != value,
                 "GREATER_THAN": lambda v: v > value, "GREATER_THAN_EQUALS": lambda v: v >= value,
                 "LESS_THAN": lambda v: v < value, "LESS_THAN_EQUALS": lambda v: v <= value,
                 "IN": lambda v: v in value, "IS_SUBSTRING": lambda v: str(value) in str(v)}
        if op not in tests:
            raise ApiError(400, f"Invalid input error: invalid predicate operation: {op}")
        items = [i for i in items if tests[op](i.get(key))]
    return items


def _predicate_value(pred: dict):
    for name in ("string_value", "stringValue", "int_value", "intValue", "long_value", "longValue",
                 "timestamp_value", "timestampValue"):
        if name in pred:
            return pred[name]
    for name in ("string_values", "stringValues", "int_values", "intValues", "long_values", "longValues"):
        if name in pred:
            return list((pred[name] or {}).get("values") or [])
    raise ApiError(400, f"Invalid input error: filter predicate has no value: {pred}")


def _grpc_code(status: int) -> int:
    return {400: 3, 401: 16, 403: 7, 404: 5, 409: 6, 500: 13, 503: 14}.get(status, 2)


def _parse_multipart(content_type: str, body: bytes) -> dict[str, bytes]:
    head = f"Content-Type: {content_type}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    return {part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
            for part in message.iter_parts()}


def _handler(server: FakeKfpServer):
    class Handler(BaseHTTPRequestHandler):
        def _serve(self):
            url = urlsplit(self.path)
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            ctype = self.headers.get("content-type", "")
            rec = Recorded(self.command, url.path,
                           {k: v[0] for k, v in parse_qs(url.query).items()},
                           {k.lower(): v for k, v in self.headers.items()})
            if ctype.startswith("multipart/form-data"):
                rec.files = _parse_multipart(ctype, body)
            elif body:
                rec.json = json.loads(body)
            status, payload = server.handle(rec)
            text = isinstance(payload, str)
            data = payload.encode() if text else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain" if text else "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = do_PATCH = _serve

        def log_message(self, *args):
            pass

    return Handler
