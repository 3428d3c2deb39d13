"""A fake Kubeflow Pipelines API server (REST v2beta1) for tests, shaped like the real one.

It speaks enough of the API for the real ``kfp.Client``: healthz, experiments, pipeline upload and
upload_version, pipelines and versions, runs, and the run log endpoint.  What it answers follows KFP's
own API server (``backend/src/apiserver``):

* **Namespaces.** Single-user (default): every namespace sent is replaced by ``""``, so every pipeline
  and experiment is shared and listing returns them all.  Multi-user: a list returns exactly the
  namespace asked for (no namespace: the shared pipelines only, never other namespaces'); experiments
  need a namespace.
* **Unique names.** A pipeline's (name, namespace) is unique: uploading a second pipeline of that name
  in that namespace answers HTTP 409 "Failed to create a pipeline and a pipeline version" (the upload
  endpoints' ``error_message`` body); a version's (pipeline, name) likewise.
* **Task details are Argo nodes.** A run's ``task_details`` are the nodes of its Argo workflow: the
  workflow, ``root-driver`` and ``root``, then per task ``<task>-driver`` (pod), ``<task>`` (the
  executor DAG, listing its pod in ``child_tasks``) and an inner ``executor`` (pod).  They carry no
  error message and there is no CACHED state: a cache hit is a SUCCEEDED task whose executor is
  SKIPPED.  What a step printed is in its executor pod's log, read through
  ``/apis/v1alpha1/runs/{run}/nodes/{pod}/log`` (which, like the real endpoint, answers 200 with an
  error body when there is no such pod).
* ``healthz`` reports ``tag_name`` (the server version, default 2.5.0) and ``multi_user``.

Tests drive runs: ``set_run`` changes a run's state and its tasks at once, ``script_run`` queues states
that successive ``GET run`` calls walk through (so an engine polling in the test's own thread sees
RUNNING, then SUCCEEDED).  A task is given as a state (``PENDING``, ``RUNNING``, ``SUCCEEDED``,
``FAILED``, ``CACHED``, ``CANCELED``, ``SKIPPED``) or ``(state, log)``: the text its executor pod
printed.

Usage::

    with FakeKfpServer(multi_user=True) as kfp:   # or kfp = FakeKfpServer().start(); ...; kfp.stop()
        client = kfp_sdk.Client(host=kfp.url)
        ...
        assert kfp.requests_to("POST", "/apis/v2beta1/runs")
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

API = "/apis/v2beta1"
LOG = "/apis/v1alpha1/runs/"
TIME = "2026-01-01T00:00:00Z"
# what Argo's node phases read as through the API (model.RuntimeState.ToV2); Omitted is UNSPECIFIED
STATE_OF_PHASE = {"Pending": "PENDING", "Running": "RUNNING", "Succeeded": "SUCCEEDED", "Skipped": "SKIPPED",
                  "Failed": "FAILED", "Error": "FAILED", "Omitted": "RUNTIME_STATE_UNSPECIFIED"}
# a task's state as a test gives it -> Argo phases of (driver, executor DAG, executor pod); None: no node yet
NODES_OF_TASK = {"PENDING": ("Pending", None, None), "RUNNING": ("Succeeded", "Running", "Running"),
                 "SUCCEEDED": ("Succeeded", "Succeeded", "Succeeded"), "CACHED": ("Succeeded", "Succeeded", "Skipped"),
                 "FAILED": ("Succeeded", "Failed", "Failed"), "CANCELED": ("Succeeded", "Failed", "Failed"),
                 "SKIPPED": ("Omitted", None, None)}
RUN_PHASE = {"PENDING": "Pending", "RUNNING": "Running", "SUCCEEDED": "Succeeded", "FAILED": "Failed",
             "CANCELED": "Failed", "CANCELING": "Running", "SKIPPED": "Skipped"}


@dataclass
class Recorded:
    """One request as the server received it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: object = None
    files: dict[str, bytes] = field(default_factory=dict)


class ApiError(Exception):
    """An error of the gRPC gateway (JSON with ``error``, ``code``, ``message``)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message

    def body(self) -> dict:
        return {"error": self.message, "code": _grpc_code(self.status), "message": self.message, "details": []}


class UploadError(ApiError):
    """An error of the upload endpoints, which are plain HTTP handlers (``error_message``, ``error_details``)."""

    def body(self) -> dict:
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
        job = {"recurring_run_id": self._new_id("recurring"), "display_name": body.get("display_name", ""),
               "description": body.get("description") or "", "pipeline_version_reference": ref,
               "runtime_config": body.get("runtime_config") or {}, "max_concurrency": str(concurrency),
               "trigger": body.get("trigger") or {}, "no_catchup": bool(body.get("no_catchup")),
               "namespace": namespace, "experiment_id": body.get("experiment_id", ""), "created_at": TIME,
               "updated_at": TIME, "mode": "ENABLE" if enabled else "DISABLE",
               "status": "ENABLED" if enabled else "DISABLED"}
        self.recurring_runs[job["recurring_run_id"]] = job
        return job

    def _list_recurring_runs(self, rec: Recorded) -> dict:
        jobs = list(self.recurring_runs.values())
        if rec.query.get("experiment_id"):
            jobs = [j for j in jobs if j["experiment_id"] == rec.query["experiment_id"]]
        else:
            jobs = [j for j in jobs if j["namespace"] == self._namespace(rec.query.get("namespace"))]
        jobs = self._filtered(jobs, rec)
        return {"recurringRuns": jobs, "total_size": len(jobs)} if jobs else {}

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


class FakeKfpServer(RecurringRunApi):
    """Threaded HTTP server on 127.0.0.1 with the state of a tiny KFP installation."""

    def __init__(self, *, token: str | None = None, multi_user: bool = False, version: str = "2.5.0"):
        self.token = token  # when set, requests need "Authorization: Bearer <token>"
        self.multi_user = multi_user
        self.version = version
        self.requests: list[Recorded] = []
        self.experiments: dict[str, dict] = {}
        self.pipelines: dict[str, dict] = {}
        self.versions: dict[str, dict] = {}  # version id -> version (with "spec_text")
        self.runs: dict[str, dict] = {}
        self.logs: dict[str, str] = {}  # pod (node id) -> what it printed
        self._scripts: dict[str, list[dict]] = {}
        self._on_create = None
        self._failures: list[list] = []  # [method, path prefix, status, message, times]
        self._ids = itertools.count(1)
        self._lock = threading.RLock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle -----------------------------------------------------------
    def start(self) -> "FakeKfpServer":
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
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
        """Set a run's state; ``tasks`` maps task name -> state or (state, what its executor printed)."""
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

    # request handling ----------------------------------------------------
    def handle(self, rec: Recorded) -> tuple[int, object]:
        with self._lock:
            self.requests.append(rec)
            try:
                self._check(rec)
                if rec.path.startswith(LOG):
                    return 200, self._log(rec.path)
                return 200, self._route(rec)
            except ApiError as err:
                return err.status, err.body()

    def _check(self, rec: Recorded) -> None:
        if self.token and rec.headers.get("authorization") != f"Bearer {self.token}":
            raise ApiError(401, "Unauthenticated: missing or invalid bearer token")
        for failure in self._failures:
            method, prefix, status, message, times = failure
            if times > 0 and rec.method == method and rec.path.startswith(prefix):
                failure[4] -= 1
                raise (UploadError if "/upload" in rec.path else ApiError)(status, message)

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
            ("GET", "pipelines", 1): lambda: {"pipelines": self._filtered(self._in_namespace(self.pipelines, rec),
                                                                          rec)},
            ("GET", "pipelines", 2): lambda: self._get(self.pipelines, parts[1]),
            ("DELETE", "pipelines", 2): lambda: self._delete_pipeline(parts[1]),
            ("GET", "pipelines", 3): lambda: {"pipeline_versions": self._versions_of(parts[1])},
            ("GET", "pipelines", 4): lambda: self._public(self._get(self.versions, parts[3])),
            ("POST", "runs", 1): lambda: self._create_run(rec.json),
            ("GET", "runs", 1): lambda: {"runs": [self._public_run(r) for r in self.runs.values()]},
            ("GET", "runs", 2): lambda: self._get_run(parts[1]),
            ("POST", "runs", 2): lambda: self._run_action(*parts[1].partition(":")[::2]),
        }
        routes.update(self._recurring_run_routes(rec, parts))
        if key not in routes:
            raise ApiError(404, f"Not Found: {rec.method} {rec.path}")
        return routes[key]()

    def _new_id(self, kind: str) -> str:
        return f"{kind}-{next(self._ids)}"

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
        return [item for item in table.values() if item["namespace"] == namespace]

    @staticmethod
    def _filtered(items: list[dict], rec: Recorded) -> list[dict]:
        for pred in json.loads(rec.query.get("filter") or "{}").get("predicates", []):
            items = [i for i in items if i.get(pred["key"]) == pred.get("stringValue")]
        return items

    def _list_experiments(self, rec: Recorded) -> dict:
        if self.multi_user and not rec.query.get("namespace"):
            raise ApiError(400, "Failed to authorize with API: Invalid input error: "
                                "An experiment cannot have an empty namespace in multi-user mode")
        return {"experiments": self._filtered(self._in_namespace(self.experiments, rec), rec)}

    def _create_experiment(self, body: dict) -> dict:
        if not body.get("display_name"):
            raise ApiError(400, "Invalid input error: experiment display_name is empty")
        namespace = self._namespace(body.get("namespace"))
        if self.multi_user and not namespace:
            raise ApiError(400, "Failed to authorize the request: Invalid input error: "
                                "An experiment cannot have an empty namespace in multi-user mode")
        if any((e["display_name"], e["namespace"]) == (body["display_name"], namespace)
               for e in self.experiments.values()):
            raise ApiError(409, f"Already exist error: Failed to create a new experiment. The name "
                                f"{body['display_name']} already exists. Please specify a new name")
        exp = {"experiment_id": self._new_id("exp"), "display_name": body["display_name"],
               "namespace": namespace, "description": body.get("description") or "",
               "created_at": TIME, "storage_state": "AVAILABLE"}
        self.experiments[exp["experiment_id"]] = exp
        return exp

    def _upload(self, rec: Recorded, action: str) -> dict:
        spec = rec.files.get("uploadfile")
        if spec is None:
            raise UploadError(400, "Failed to read pipeline from file")
        name = rec.query.get("name") or rec.query.get("display_name")
        if action == "upload":
            namespace = self._namespace(rec.query.get("namespace"))
            if any((p["name"], p["namespace"]) == (name, namespace) for p in self.pipelines.values()):
                raise UploadError(409, "Failed to create a pipeline and a pipeline version")  # (name, namespace)
            pipeline = {"pipeline_id": self._new_id("pipeline"), "display_name": name, "name": name,
                        "description": rec.query.get("description", ""), "namespace": namespace,
                        "created_at": TIME}
            self.pipelines[pipeline["pipeline_id"]] = pipeline
            self._add_version(pipeline["pipeline_id"], name, spec)
            return pipeline
        if action == "upload_version":
            pipeline_id = rec.query.get("pipelineid")
            if pipeline_id not in self.pipelines:
                raise UploadError(400, "Failed to create a pipeline version")
            if any((v["pipeline_id"], v["name"]) == (pipeline_id, name) for v in self.versions.values()):
                raise UploadError(409, "Failed to create a pipeline version")
            return self._public(self._add_version(pipeline_id, name, spec))
        raise ApiError(404, f"Not Found: POST {rec.path}")

    def _add_version(self, pipeline_id: str, name: str, spec: bytes) -> dict:
        version = {"pipeline_version_id": self._new_id("version"), "pipeline_id": pipeline_id,
                   "display_name": name, "name": name, "created_at": TIME,
                   "spec_text": spec.decode()}
        self.versions[version["pipeline_version_id"]] = version
        return version

    @staticmethod
    def _public(version: dict) -> dict:
        return {k: v for k, v in version.items() if k != "spec_text"}

    def _versions_of(self, pipeline_id: str) -> list[dict]:
        self._get(self.pipelines, pipeline_id)
        found = [self._public(v) for v in self.versions.values() if v["pipeline_id"] == pipeline_id]
        return found[::-1]  # newest first, like KFP's default sort

    def _delete_pipeline(self, pipeline_id: str) -> dict:
        self._get(self.pipelines, pipeline_id)
        del self.pipelines[pipeline_id]
        for vid in [v for v, ver in self.versions.items() if ver["pipeline_id"] == pipeline_id]:
            del self.versions[vid]
        return {}

    def _create_run(self, body: dict) -> dict:
        ref = body.get("pipeline_version_reference") or {}
        if ref and ref.get("pipeline_version_id") not in self.versions:
            raise ApiError(404, f"Pipeline version {ref.get('pipeline_version_id')} not found")
        if body.get("experiment_id") and body["experiment_id"] not in self.experiments:
            raise ApiError(404, f"Experiment {body['experiment_id']} not found")
        if self.multi_user and not body.get("experiment_id"):
            raise ApiError(400, "Invalid input error: Resource cannot have an empty namespace and experiment id "
                                "in multi-user mode")
        number = next(self._ids)
        run = {"run_id": f"run-{number}", "display_name": body.get("display_name", ""),
               "experiment_id": body.get("experiment_id", ""), "pipeline_version_reference": ref,
               "runtime_config": body.get("runtime_config") or {}, "storage_state": "AVAILABLE",
               "created_at": TIME, "state": "PENDING", "_workflow": f"kale-run-{number:05d}", "_tasks": {}}
        self.runs[run["run_id"]] = run
        if "next" in self._scripts:
            self._scripts[run["run_id"]] = self._scripts.pop("next")
        if self._on_create is not None:
            run["_busy"] = threading.Thread(target=self._on_create, args=(dict(run),), daemon=True)
            run["_busy"].start()
        return self._public_run(run)

    def _run_action(self, run_id: str, action: str) -> dict:
        run = self._get(self.runs, run_id)
        if action != "terminate":
            raise ApiError(404, f"Not Found: run action {action!r}")
        self._scripts.pop(run_id, None)
        self._apply(run, {"state": "CANCELED", "tasks": {name: "CANCELED" if state in ("PENDING", "RUNNING")
                                                          else value for name, value in run["_tasks"].items()
                                                          for state in [_state(value)]}})
        return {}

    def _get_run(self, run_id: str) -> dict:
        run = self._get(self.runs, run_id)
        if run.get("_busy") is not None and run["_busy"].is_alive():
            self._apply(run, {"state": "RUNNING", "tasks": {}})
            return self._public_run(run)
        script = self._scripts.get(run_id)
        if script:
            self._apply(run, script.pop(0) if len(script) > 1 else script[0])
        return self._public_run(run)

    def _apply(self, run: dict, change: dict) -> None:
        run["state"] = change["state"]
        if change.get("error"):
            run["error"] = {"code": 2, "message": change["error"]}
        if change.get("tasks") is not None:
            run["_tasks"] = dict(change["tasks"])
            for name, value in run["_tasks"].items():
                if isinstance(value, tuple):
                    self.logs[_node_id(run, f"{name}.executor")] = value[1]
                elif _state(value) in ("RUNNING", "SUCCEEDED", "FAILED", "CANCELED"):
                    self.logs.setdefault(_node_id(run, f"{name}.executor"), f"running step {name}\n")

    def _public_run(self, run: dict) -> dict:
        out = {k: v for k, v in run.items() if not k.startswith("_")}
        out["run_details"] = {"task_details": _argo_nodes(run)}
        return out

    def _log(self, path: str) -> object:
        """The run log endpoint: a pod's log as text; without such a pod, 200 and an error body (as KFP)."""
        run_id, _, rest = unquote(path[len(LOG):]).partition("/nodes/")
        node = rest.removesuffix("/log")
        if run_id in self.runs and node in self.logs:
            return self.logs[node]
        return {"error_message": f"Failed to read logs for run {run_id}: Internal Server Error: Failed to "
                                 f"read logs from pod {node} due to error opening log stream",
                "error_details": "pods not found"}


def _state(value) -> str:
    return value[0] if isinstance(value, tuple) else value


def _node_id(run: dict, node: str) -> str:
    """Argo's node id: the workflow name and a number derived from the node's path."""
    return f"{run['_workflow']}-{sum(ord(c) * (i + 1) for i, c in enumerate(node)) % 10**10:010d}"


def _argo_nodes(run: dict) -> list[dict]:
    """The run's task details as the API builds them from the Argo workflow's nodes (sorted by node id)."""
    workflow, phase = run["_workflow"], RUN_PHASE.get(run["state"])
    if not phase or run["state"] == "PENDING" and not run["_tasks"]:
        return []
    nodes = [(workflow, workflow, phase, ["root-driver", "root"]), ("root-driver", "root-driver", "Succeeded", []),
             ("root", "root", phase, [])]
    for name, value in run["_tasks"].items():
        driver, dag, executor = NODES_OF_TASK[_state(value)]
        nodes.append((f"{name}.driver", f"{name}-driver", driver, []))
        if dag:
            nodes.append((name, name, dag, [f"{name}.executor"]))
            nodes.append((f"{name}.executor", "executor", executor, []))
    details = []
    for path, display_name, node_phase, children in nodes:
        details.append({"run_id": run["run_id"], "task_id": _node_id(run, "task:" + path), "display_name":
                        display_name, "create_time": TIME, "start_time": TIME, "end_time": TIME,
                        "state": STATE_OF_PHASE[node_phase], "execution_id": "0",
                        "child_tasks": [{"pod_name": _node_id(run, child)} for child in children], "_id":
                        _node_id(run, path)})
    details.sort(key=lambda d: d.pop("_id"))
    return details


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
