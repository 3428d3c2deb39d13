"""Run a plan on Kubeflow Pipelines: compile to YAML, upload, run, follow.

The :class:`~kale_magic.engines.base.Engine` protocol, driven by ``launch``:
``compile`` writes the step notebooks (for inspection) and the pipeline YAML,
``upload`` registers it as a new pipeline version, ``run`` creates the run and
follows it, reporting each KFP task's state as the state of its step.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from ...errors import EngineError, KaleError
from ...layout import RunDir
from ...plan import Plan
from ..base import Compiled, Outcome, SnapshotRef, Uploaded
from ...snapshot.remote import is_store
from .client import CONNECTION, api_error, connect, resolve_settings
from .compiler import NULLABLE, CompileOptions, Names, compile_pipeline, pipeline_arguments

if TYPE_CHECKING:  # engines report into a run's state; the run package drives them
    from ...run.state import RunState

FINAL_RUN_STATES = ("SUCCEEDED", "FAILED", "CANCELED", "SKIPPED")  # CANCELED ends a run too
STEP_STATES = {"PENDING": "pending", "RUNNING": "running", "CANCELING": "running",
               "SUCCEEDED": "succeeded", "SKIPPED": "skipped", "CACHED": "cached",
               "FAILED": "failed", "CANCELED": "skipped"}
POLL_ATTEMPTS = 3
REQUEST_TIMEOUT = 60  # seconds per API call that creates something or polls


class KfpEngine:
    name = "kfp"

    def __init__(self, host: str | None = None, ui_host: str | None = None, *, config: dict | None = None,
                 pipeline_file: Path | None = None, poll_interval: float = 5.0):
        """``config``: the ``Kale`` settings tagged for KFP (connection settings and CompileOptions fields)."""
        config = {k: v for k, v in (config or {}).items() if v is not None or k in NULLABLE}
        self.connection = {k: config[k] for k in CONNECTION if k in config}
        self.options = CompileOptions.from_settings(config)
        self.host, self.ui_host = host, ui_host
        self.pipeline_file = pipeline_file
        self.poll_interval = poll_interval
        self._cancel = threading.Event()
        self._settings = self._client = self._experiment_id = self._version = None
        self._snapshot: tuple[Path, str] | None = None
        self._publish_at_compile = False

    def prepare(self, snapshot: SnapshotRef | None, run_dir: RunDir, will_run: bool) -> None:
        """Give every step the snapshot; it needs a pipeline root (``Kale.pipeline_root``) to be published
        to, else the steps start in an empty folder. It is published with the upload, or as soon as the
        YAML is written when nothing will be uploaded (``--compile-only``) or the root is a folder
        (``kfp.local``), so that the YAML runs as it is."""
        from ...snapshot import is_store, published_url

        root = self.connection.get("pipeline_root")
        if snapshot is not None and root:
            self._snapshot = (snapshot.store, snapshot.id)
            self._publish_at_compile = not will_run or not is_store(root)
            self.options = dataclasses.replace(self.options, snapshot_url=published_url(root, snapshot.id),
                                               workspace=snapshot.root)  # its modules are not installed

    # Compile --------------------------------------------------------------------------------
    def compile(self, plan: Plan, run_dir: RunDir) -> Compiled:
        """Step notebooks under the run (to read what each step runs) and the pipeline YAML."""
        from ...step.notebooks import write_step_notebooks

        notebooks = write_step_notebooks(plan, run_dir)
        self.pipeline_file = compile_pipeline(plan, self.pipeline_file, self.options)
        if self._snapshot and self._publish_at_compile:
            self._publish_snapshot()
        return Compiled(notebooks, self.pipeline_file)

    def _publish_snapshot(self) -> None:
        from ...snapshot import publish

        publish(*self._snapshot, self.connection["pipeline_root"])
        self._snapshot = None

    # Upload ---------------------------------------------------------------------------------
    def upload(self, plan: Plan, state: RunState, compiled: Compiled) -> Uploaded:
        """Upload the YAML as a new pipeline version (publishing the snapshot first), once the server's
        version is known to run it."""
        from .versions import check, server_tag

        try:
            self._settings = resolve_settings(self.host, self.ui_host, config=self.connection)
            state.task("Upload", "running", f"to {self._settings.host}")
            self._client = connect(self._settings)
            tag = self._call("reading the server's version", server_tag, self._client)
            note = check(tag, self._settings.host, plan, self.options)
            if self._snapshot:
                self._publish_snapshot()
            name = Names(plan).pipeline
            experiment = self._call("getting or creating the experiment", _experiment, self._client,
                                    plan.experiment)
            self._version = self._call("uploading the pipeline", _upload_version, self._client,
                                       self.pipeline_file, name, f"{name}-{state.run_id}", plan.description)
        except KaleError as err:
            raise EngineError(f"{str(err).rstrip('.')}. The pipeline YAML is kept at {self.pipeline_file}.") from None
        self._experiment_id = experiment.experiment_id
        version = self._version
        links = {"experiment": self._settings.link(f"experiments/details/{experiment.experiment_id}"),
                 "pipeline": self._settings.link(f"pipelines/details/{version.pipeline_id}"
                                                 f"/version/{version.pipeline_version_id}")}
        ids = {"kfp_experiment_id": experiment.experiment_id, "kfp_pipeline_id": version.pipeline_id,
               "kfp_version_id": version.pipeline_version_id}
        message = f"pipeline {name}, version {version.display_name}" + (f"; {note}" if note else "")
        return Uploaded(message, links, ids)

    # Schedule -------------------------------------------------------------------------------
    def schedule(self, plan: Plan, state: RunState, schedule) -> Uploaded:
        """A recurring run of the uploaded version (instead of one run now), with the plan's parameters."""
        from .schedules import create, schedule_name

        name = schedule_name(Names(plan).pipeline, state.run_id)
        created = self._call("creating the recurring run", create, self._client, schedule, name=name,
                             description=plan.description, experiment_id=self._experiment_id,
                             pipeline_id=self._version.pipeline_id, version_id=self._version.pipeline_version_id,
                             parameters=pipeline_arguments(plan, plan.parameters),
                             namespace=self._client.get_user_namespace() or None)
        link = self._settings.link(f"recurringrun/details/{created.recurring_run_id}")
        note = schedule.note()
        return Uploaded(f"schedule {name}: {schedule.cron}" + (f" ({note})" if note else ""), {"schedule": link},
                        {})

    # Run ------------------------------------------------------------------------------------
    def cancel(self) -> None:
        self._cancel.set()

    def run(self, plan: Plan, state: RunState, run_dir: RunDir, compiled: Compiled) -> Outcome:
        """Create the run from the uploaded version and follow it to its end."""
        try:
            run_id = self._start(plan, state, plan.parameters)
            outcome = self._follow(plan, state, run_id)
        except KaleError as err:
            return Outcome("failed", str(err))
        root = self.options.pipeline_root
        if root and is_store(root):  # the artifacts are where the notebook can read them
            from .results import collect

            try:
                state.add_metrics(collect(plan, root, run_id, run_dir))
            except KaleError as err:
                return Outcome("failed", outcome.error or f"the run's results could not be read from {root}: {err}")
        return outcome

    def _start(self, plan: Plan, state: RunState, parameters: dict) -> str:
        from kfp_server_api import V2beta1PipelineVersionReference, V2beta1Run, V2beta1RuntimeConfig

        body = V2beta1Run(
            experiment_id=self._experiment_id, display_name=f"{plan.pipeline} {state.run_id}",
            pipeline_version_reference=V2beta1PipelineVersionReference(
                pipeline_id=self._version.pipeline_id, pipeline_version_id=self._version.pipeline_version_id),
            runtime_config=V2beta1RuntimeConfig(parameters=pipeline_arguments(plan, parameters)))
        run = self._call("creating the run", self._client.runs.run_service_create_run, run=body,
                         _request_timeout=REQUEST_TIMEOUT)
        link = self._settings.link(f"runs/details/{run.run_id}")
        state.set_ids(kfp_run_id=run.run_id)
        state.add_links(run=link)
        state.task("Run", "running", f"run {run.run_id} on {self._settings.host}", run=link)
        return run.run_id

    def _follow(self, plan: Plan, state: RunState, run_id: str) -> Outcome:
        steps_by_task = Names(plan).steps_by_task
        seen: dict[str, str] = {}
        terminating = False
        while True:
            run = self._poll(run_id)
            failures = _update_steps(state, run, steps_by_task, seen, state.links["run"],
                                     lambda pod: self._read_log(run_id, pod))
            final = (run.state or "").upper()
            if final in FINAL_RUN_STATES:
                break
            if self._cancel.wait(self.poll_interval) and not terminating:
                terminating = True
                self._call("canceling the run", self._client.runs.run_service_terminate_run, run_id,
                           _request_timeout=REQUEST_TIMEOUT)
        if final == "SUCCEEDED":
            return Outcome("succeeded")
        if final == "CANCELED":
            error = "the run was canceled in Kubeflow Pipelines"
        elif failures:
            error = "step '{}' failed on Kubeflow Pipelines: {}".format(*failures[0])
        else:
            error = f"the run ended {final.lower()} on Kubeflow Pipelines: {_message(run.error) or 'no reason given'}"
        for name, step in state.steps.items():
            if step.status in ("pending", "running"):
                state.step(name, "skipped", message=f"skipped: the run ended {final.lower()}")
        return Outcome("failed", error)

    def _poll(self, run_id: str):
        """The run, tolerating a few failed polls in a row: the run goes on while the API hiccups."""
        for attempt in range(POLL_ATTEMPTS):
            try:
                return self._call("following the run", self._client.runs.run_service_get_run,
                                  run_id=run_id, _request_timeout=REQUEST_TIMEOUT)
            except EngineError:
                if attempt == POLL_ATTEMPTS - 1:
                    raise
                self._cancel.wait(self.poll_interval)

    def _read_log(self, run_id: str, pod: str) -> str | None:
        """What a step's pod printed, through the API's log endpoint; None when there is no such pod."""
        api = self._client._run_api.api_client
        try:
            response = api.call_api(f"/apis/v1alpha1/runs/{run_id}/nodes/{pod}/log", "GET",
                                    auth_settings=["Bearer"], _preload_content=False,
                                    _request_timeout=REQUEST_TIMEOUT)
        except Exception:
            return None
        text = response.data.decode("utf-8", "replace")
        if text.startswith("{") and '"error_message"' in text[:200]:
            return None  # the endpoint answers 200 with an error body when the pod is gone or never ran
        return text

    def _call(self, action: str, func, *args, **kwargs):
        try:
            return func(*args, **kwargs)
        except KaleError:
            raise
        except Exception as exc:
            raise api_error(exc, self._settings, action) from None


def _update_steps(state, run, steps_by_task, seen, link, read_log) -> list[tuple[str, str]]:
    """Copy per-task states into the step states; return (step, message) of the failed steps.

    The API builds task details from Argo's nodes: per step a ``<task>-driver`` pod, the ``<task>``
    executor DAG (its pod in ``child_tasks``) and an inner ``executor`` pod. They carry no error text
    and no CACHED state: a cache hit is a SUCCEEDED task whose executor was SKIPPED (it never ran, so it
    has no log), and what a step printed (its error) is only in its executor pod's log, read with
    ``read_log(pod)``.
    """
    failures = []
    details = (run.run_details.task_details if run.run_details else None) or []
    any_skipped_executor = any(t.display_name == "executor" and (t.state or "").upper() == "SKIPPED"
                               for t in details)
    canceled = (run.state or "").upper() in ("CANCELED", "CANCELING")
    for task in details:
        step = steps_by_task.get(task.display_name) or (task.display_name if task.display_name in state.steps
                                                         else None)
        status = STEP_STATES.get((task.state or "").upper())
        if step is None or status is None or seen.get(step) in ("succeeded", "cached", "failed", "skipped"):
            continue
        pods = [child.pod_name for child in task.child_tasks or [] if child.pod_name]
        message = ""
        if status == "failed" and canceled:
            status, message = "skipped", "canceled"
        elif status == "failed":
            message = _step_error(read_log(pods[0]) if pods else None) or "no message from KFP"
            failures.append((step, message))
        elif status == "succeeded" and any_skipped_executor and pods and read_log(pods[0]) is None:
            status, message = "cached", "KFP cache hit"
        elif status == "skipped" and task.state == "CANCELED":
            message = "canceled"
        if seen.get(step) != status:
            seen[step] = status
            state.step(step, status, message=message, links={"KFP run": link})
    return failures


def _step_error(log: str | None) -> str:
    """The error line a failed step printed (``step 'x' failed: ...``), else the log's last line."""
    lines = [line.strip() for line in (log or "").splitlines() if line.strip()]
    for line in reversed(lines):
        marker = line.find("failed: ")
        if line.startswith("RuntimeError: step '") and marker > 0:
            return line[marker + len("failed: "):]
    return lines[-1] if lines else ""


def _message(error) -> str:
    return (getattr(error, "message", None) or "").strip() if error else ""


def _experiment(client, name: str):
    """The experiment named ``name``, created when it does not exist yet."""
    from kfp_server_api import V2beta1Experiment

    namespace = client.get_user_namespace() or None
    try:
        return client.get_experiment(experiment_name=name, namespace=namespace)
    except ValueError as exc:
        if not str(exc).startswith("No experiment is found"):
            raise EngineError(f"Kubeflow Pipelines has several experiments named {name!r}; "
                              "use another name with --experiment.") from None
    body = V2beta1Experiment(display_name=name, namespace=namespace)
    return client.experiments.experiment_service_create_experiment(experiment=body, _request_timeout=REQUEST_TIMEOUT)


def _upload_version(client, path: Path, name: str, version_name: str, description: str):
    """Upload a new version of pipeline ``name``, creating the pipeline first if needed.

    The pipeline is looked up by name in the user's namespace (``kfp.Client.get_pipeline_id`` only
    sees shared pipelines, so on a multi-user installation the second run would upload the same name
    again and get HTTP 409). A pipeline created here and left without a usable version is deleted again.
    """
    namespace = client.get_user_namespace() or None
    pipeline_id = _pipeline_id(client, name, namespace)
    if pipeline_id is not None:
        return client.pipeline_uploads.upload_pipeline_version(
            str(path), name=version_name, pipelineid=pipeline_id, description=description or None,
            _request_timeout=REQUEST_TIMEOUT)
    pipeline = client.pipeline_uploads.upload_pipeline(
        str(path), name=name, description=description or None, namespace=namespace,
        _request_timeout=REQUEST_TIMEOUT)
    try:
        versions = client.list_pipeline_versions(pipeline.pipeline_id, page_size=1,
                                                 sort_by="created_at desc").pipeline_versions
        if not versions:
            raise EngineError(f"Kubeflow Pipelines created pipeline {name!r} without a version.")
        return versions[0]
    except BaseException:
        client.delete_pipeline(pipeline.pipeline_id)
        raise


def _pipeline_id(client, name: str, namespace: str | None) -> str | None:
    """The id of the pipeline named ``name`` in ``namespace`` (shared pipelines when None)."""
    import json

    predicate = {"operation": "EQUALS", "key": "display_name", "stringValue": name}
    found = client.list_pipelines(filter=json.dumps({"predicates": [predicate]}), namespace=namespace,
                                  page_size=2).pipelines or []
    return found[0].pipeline_id if found else None
