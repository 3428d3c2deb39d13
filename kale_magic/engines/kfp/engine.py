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
from .client import CONNECTION, api_error, connect, resolve_settings
from .compiler import CompileOptions, Names, compile_pipeline, pipeline_arguments

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
        config = {k: v for k, v in (config or {}).items() if v is not None}
        self.connection = {k: config[k] for k in CONNECTION if k in config}
        self.options = CompileOptions.from_settings(config)
        self.host, self.ui_host = host, ui_host
        self.pipeline_file = pipeline_file
        self.poll_interval = poll_interval
        self._cancel = threading.Event()
        self._settings = self._client = self._experiment_id = self._version = None
        self._snapshot: tuple[Path, str] | None = None

    def prepare(self, snapshot: SnapshotRef | None, run_dir: RunDir, will_run: bool) -> None:
        """Give every step the snapshot; it needs an object-store pipeline root (``Kale.pipeline_root``)
        to be published to (at upload), else the steps start in an empty folder."""
        from ...snapshot import published_url

        root = self.connection.get("pipeline_root")
        if snapshot is not None and root:
            self._snapshot = (snapshot.store, snapshot.id)
            self.options = dataclasses.replace(self.options, snapshot_url=published_url(root, snapshot.id))

    # Compile --------------------------------------------------------------------------------
    def compile(self, plan: Plan, run_dir: RunDir) -> Compiled:
        """Step notebooks under the run (to read what each step runs) and the pipeline YAML."""
        from ...step.notebooks import write_step_notebooks

        notebooks = write_step_notebooks(plan, run_dir)
        self.pipeline_file = compile_pipeline(plan, self.pipeline_file, self.options)
        return Compiled(notebooks, self.pipeline_file)

    # Upload ---------------------------------------------------------------------------------
    def upload(self, plan: Plan, state: RunState, compiled: Compiled) -> Uploaded:
        """Upload the YAML as a new pipeline version (publishing the snapshot first)."""
        try:
            self._settings = resolve_settings(self.host, self.ui_host, config=self.connection)
            state.task("Upload", "running", f"to {self._settings.host}")
            if self._snapshot:
                from ...snapshot import publish

                publish(*self._snapshot, self.connection["pipeline_root"])
            self._client = connect(self._settings)
            name = Names(plan).pipeline
            experiment = self._call("getting or creating the experiment", _experiment, self._client,
                                    plan.experiment)
            self._version = self._call("uploading the pipeline", _upload_version, self._client,
                                       self.pipeline_file, name, f"{name}-{state.run_id}", plan.description)
        except KaleError as err:
            raise EngineError(f"{err} The pipeline YAML is kept at {self.pipeline_file}.") from None
        self._experiment_id = experiment.experiment_id
        version = self._version
        links = {"experiment": self._settings.link(f"experiments/details/{experiment.experiment_id}"),
                 "pipeline": self._settings.link(f"pipelines/details/{version.pipeline_id}"
                                                 f"/version/{version.pipeline_version_id}")}
        ids = {"kfp_experiment_id": experiment.experiment_id, "kfp_pipeline_id": version.pipeline_id,
               "kfp_version_id": version.pipeline_version_id}
        return Uploaded(f"pipeline {name}, version {version.display_name}", links, ids)

    # Run ------------------------------------------------------------------------------------
    def cancel(self) -> None:
        self._cancel.set()

    def run(self, plan: Plan, state: RunState, run_dir: RunDir, compiled: Compiled) -> Outcome:
        """Create the run from the uploaded version and follow it to its end."""
        try:
            run_id = self._start(plan, state, plan.parameters)
            return self._follow(plan, state, run_id)
        except KaleError as err:
            return Outcome("failed", str(err))

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
            failures = _update_steps(state, run, steps_by_task, seen, state.links["run"])
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

    def _call(self, action: str, func, *args, **kwargs):
        try:
            return func(*args, **kwargs)
        except KaleError:
            raise
        except Exception as exc:
            raise api_error(exc, self._settings, action) from None


def _update_steps(state, run, steps_by_task, seen, link) -> list[tuple[str, str]]:
    """Copy per-task states into the step states; return (step, message) of the failed steps."""
    failures = []
    details = (run.run_details.task_details if run.run_details else None) or []
    for task in details:
        step = steps_by_task.get(task.display_name) or (task.display_name if task.display_name in state.steps
                                                         else None)
        status = STEP_STATES.get((task.state or "").upper())
        if step is None or status is None:
            continue
        message = _message(task.error) or ("canceled" if status == "skipped" and task.state == "CANCELED" else "")
        if status == "failed":
            failures.append((step, message or "no message from KFP"))
        if seen.get(step) != status:
            seen[step] = status
            state.step(step, status, message=message, links={"KFP run": link})
    return failures


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

    A pipeline created here and left without a usable version is deleted again.
    """
    pipeline_id = client.get_pipeline_id(name)
    if pipeline_id is not None:
        return client.pipeline_uploads.upload_pipeline_version(
            str(path), name=version_name, pipelineid=pipeline_id, description=description or None,
            _request_timeout=REQUEST_TIMEOUT)
    pipeline = client.pipeline_uploads.upload_pipeline(
        str(path), name=name, description=description or None, namespace=client.get_user_namespace() or None,
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
