"""A fake Kubeflow Pipelines API server (REST v2beta1) for tests.

It speaks enough of the API for the real ``kfp.Client``: healthz, experiments,
pipeline upload and upload_version, pipelines and versions, runs.  It records
every request so a test can assert what the client sent, and it lets the test
drive runs: ``set_run`` changes a run's state and per-task details at once,
``script_run`` queues states that successive ``GET run`` calls walk through
(so an engine polling in the test's own thread sees RUNNING, then SUCCEEDED).

Usage::

    with FakeKfpServer() as kfp:          # or kfp = FakeKfpServer().start(); ...; kfp.stop()
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
from urllib.parse import parse_qs, urlsplit

API = "/apis/v2beta1"
TIME = "2026-01-01T00:00:00Z"


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
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class FakeKfpServer:
    """Threaded HTTP server on 127.0.0.1 with the state of a tiny KFP installation."""

    def __init__(self, *, token: str | None = None, multi_user: bool = False):
        self.token = token  # when set, requests need "Authorization: Bearer <token>"
        self.multi_user = multi_user
        self.requests: list[Recorded] = []
        self.experiments: dict[str, dict] = {}
        self.pipelines: dict[str, dict] = {}
        self.versions: dict[str, dict] = {}  # version id -> version (with "spec_text")
        self.runs: dict[str, dict] = {}
        self._scripts: dict[str, list[dict]] = {}
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
        """Set a run's state; ``tasks`` maps task name -> state or (state, error message)."""
        with self._lock:
            _apply(self.runs[run_id], {"state": state, "tasks": tasks, "error": error})

    def script_run(self, *states: dict) -> None:
        """Queue states for the next run created; each ``GET run`` applies the next one.

        Each item is ``dict(state=..., tasks={...}, error=...)``; the last one stays.
        """
        with self._lock:
            self._scripts["next"] = list(states)

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
                return 200, self._route(rec)
            except ApiError as err:
                return err.status, {"error": err.message, "code": _grpc_code(err.status),
                                    "message": err.message, "details": []}

    def _check(self, rec: Recorded) -> None:
        if self.token and rec.headers.get("authorization") != f"Bearer {self.token}":
            raise ApiError(401, "Unauthenticated: missing or invalid bearer token")
        for failure in self._failures:
            method, prefix, status, message, times = failure
            if times > 0 and rec.method == method and rec.path.startswith(prefix):
                failure[4] -= 1
                raise ApiError(status, message)

    def _route(self, rec: Recorded) -> object:
        parts = rec.path[len(API):].strip("/").split("/") if rec.path.startswith(API) else []
        key = (rec.method, parts[0] if parts else "", len(parts))
        routes = {
            ("GET", "healthz", 1): lambda: {"multi_user": self.multi_user},
            ("POST", "experiments", 1): lambda: self._create_experiment(rec.json),
            ("GET", "experiments", 1): lambda: {"experiments": self._filtered(self.experiments, rec)},
            ("GET", "experiments", 2): lambda: self._get(self.experiments, parts[1]),
            ("POST", "pipelines", 2): lambda: self._upload(rec, parts[1]),
            ("GET", "pipelines", 1): lambda: {"pipelines": self._filtered(self.pipelines, rec)},
            ("GET", "pipelines", 2): lambda: self._get(self.pipelines, parts[1]),
            ("DELETE", "pipelines", 2): lambda: self._delete_pipeline(parts[1]),
            ("GET", "pipelines", 3): lambda: {"pipeline_versions": self._versions_of(parts[1])},
            ("GET", "pipelines", 4): lambda: self._public(self._get(self.versions, parts[3])),
            ("POST", "runs", 1): lambda: self._create_run(rec.json),
            ("GET", "runs", 1): lambda: {"runs": list(self.runs.values())},
            ("GET", "runs", 2): lambda: self._get_run(parts[1]),
            ("POST", "runs", 2): lambda: self._run_action(*parts[1].partition(":")[::2]),
        }
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

    @staticmethod
    def _filtered(table: dict, rec: Recorded) -> list[dict]:
        items = list(table.values())
        if "namespace" in rec.query:
            items = [i for i in items if i.get("namespace", "") in ("", rec.query["namespace"])]
        for pred in json.loads(rec.query.get("filter") or "{}").get("predicates", []):
            items = [i for i in items if i.get(pred["key"]) == pred.get("stringValue")]
        return items

    def _create_experiment(self, body: dict) -> dict:
        if not body.get("display_name"):
            raise ApiError(400, "Invalid input error: experiment display_name is empty")
        exp = {"experiment_id": self._new_id("exp"), "display_name": body["display_name"],
               "namespace": body.get("namespace") or "", "description": body.get("description") or "",
               "created_at": TIME, "storage_state": "AVAILABLE"}
        self.experiments[exp["experiment_id"]] = exp
        return exp

    def _upload(self, rec: Recorded, action: str) -> dict:
        spec = rec.files.get("uploadfile")
        if spec is None:
            raise ApiError(400, "Invalid input error: no uploadfile in the request")
        name = rec.query.get("name") or rec.query.get("display_name")
        if action == "upload":
            if any(p["display_name"] == name for p in self.pipelines.values()):
                raise ApiError(409, f"Already exists: pipeline {name!r} already exists")
            pipeline = {"pipeline_id": self._new_id("pipeline"), "display_name": name, "name": name,
                        "description": rec.query.get("description", ""),
                        "namespace": rec.query.get("namespace", ""), "created_at": TIME}
            self.pipelines[pipeline["pipeline_id"]] = pipeline
            self._add_version(pipeline["pipeline_id"], name, spec)
            return pipeline
        if action == "upload_version":
            pipeline_id = rec.query.get("pipelineid")
            self._get(self.pipelines, pipeline_id)
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
        run = {"run_id": self._new_id("run"), "display_name": body.get("display_name", ""),
               "experiment_id": body.get("experiment_id", ""), "pipeline_version_reference": ref,
               "runtime_config": body.get("runtime_config") or {}, "storage_state": "AVAILABLE",
               "created_at": TIME, "state": "PENDING", "run_details": {"task_details": []}}
        self.runs[run["run_id"]] = run
        if "next" in self._scripts:
            self._scripts[run["run_id"]] = self._scripts.pop("next")
        return run

    def _run_action(self, run_id: str, action: str) -> dict:
        run = self._get(self.runs, run_id)
        if action != "terminate":
            raise ApiError(404, f"Not Found: run action {action!r}")
        self._scripts.pop(run_id, None)
        _apply(run, {"state": "CANCELED", "tasks": {t["display_name"]: "CANCELED" if t["state"] in (
            "PENDING", "RUNNING") else t["state"] for t in run["run_details"]["task_details"]}})
        return {}

    def _get_run(self, run_id: str) -> dict:
        run = self._get(self.runs, run_id)
        script = self._scripts.get(run_id)
        if script:
            _apply(run, script.pop(0) if len(script) > 1 else script[0])
        return run


def _apply(run: dict, change: dict) -> None:
    run["state"] = change["state"]
    if change.get("error"):
        run["error"] = {"code": 2, "message": change["error"]}
    tasks = []
    for i, (name, value) in enumerate((change.get("tasks") or {}).items()):
        state, message = value if isinstance(value, tuple) else (value, None)
        task = {"task_id": f"task-{i}", "run_id": run["run_id"], "display_name": name,
                "state": state, "create_time": TIME}
        if message:
            task["error"] = {"code": 2, "message": message}
        tasks.append(task)
    if change.get("tasks") is not None:
        run["run_details"] = {"task_details": tasks}


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
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = do_PATCH = _serve

        def log_message(self, *args):
            pass

    return Handler
