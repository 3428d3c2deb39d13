"""Run a plan on Kubeflow Pipelines: compile, upload, run, follow.

Progress goes into the ``RunState`` exactly as with the local engine (tasks
Compile, Upload and Run with their links; one entry per step), so the panel,
the run store and the ``Run`` object work the same for both.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..compiler import CompileOptions, Names, compile_pipeline, pipeline_arguments
from ..errors import EngineError
from ..kfp_client import KfpSettings, api_error, connect, resolve_settings
from ..plan import Plan
from ..state import RunState

FINAL_RUN_STATES = ("SUCCEEDED", "FAILED", "CANCELED", "SKIPPED")  # CANCELED ends a run too
STEP_STATES = {"PENDING": "pending", "RUNNING": "running", "CANCELING": "running",
               "SUCCEEDED": "succeeded", "SKIPPED": "skipped", "CACHED": "cached",
               "FAILED": "failed", "CANCELED": "skipped"}


class KfpEngine:
    """Compile the plan to YAML, upload it as a pipeline (version), run it and follow the run."""

    name = "kfp"

    def __init__(self, host: str | None = None, ui_host: str | None = None, *,
                 config: dict | None = None, compile_only: bool = False, upload_only: bool = False,
                 poll_interval: float = 5.0, pipeline_file: Path | None = None, **compile_options):
        self.host, self.ui_host, self.config = host, ui_host, dict(config or {})
        self.compile_only, self.upload_only = compile_only, upload_only
        self.poll_interval = poll_interval
        self.pipeline_file = pipeline_file
        self.options = CompileOptions(**compile_options)

    def run(self, plan: Plan, state: RunState, run_dir: Path, parameters: dict) -> None:
        """Drive the run to its end; failures end up in ``state`` as one sentence, never raised."""
        current, path = "Compile", None
        try:
            path = self._compile(plan, state)
            if self.compile_only:
                return self._stop(state, ("Upload", "Run"))
            current = "Upload"
            settings = resolve_settings(self.host, self.ui_host, config=self.config)
            client, experiment_id, version = self._upload(plan, state, settings, path)
            if self.upload_only:
                return self._stop(state, ("Run",))
            current = "Run"
            run_id = self._start(plan, state, settings, client, experiment_id, version, parameters)
            self._follow(plan, state, settings, client, run_id)
        except EngineError as err:
            message = f"{err} The pipeline YAML is kept at {path}." if path else str(err)
            state.task(current, "failed", message)
            state.finish("failed", message)

    # phases --------------------------------------------------------------
    def _compile(self, plan: Plan, state: RunState) -> Path:
        state.task("Compile", "running")
        path = compile_pipeline(plan, self.pipeline_file, self.options)
        state.task("Compile", "done", f"{len(plan.steps)} steps, image {self.options.base_image}",
                   YAML=str(path))
        state.links["Pipeline YAML"] = str(path)
        return path

    def _upload(self, plan: Plan, state: RunState, settings: KfpSettings, path: Path):
        state.task("Upload", "running", f"to {settings.host}")
        client = connect(settings)
        name = Names(plan).pipeline
        experiment = _call(settings, "getting or creating the experiment", _experiment, client, plan.experiment)
        version = _call(settings, "uploading the pipeline", _upload_version, client, path, name,
                        f"{name}-{state.run_id}", plan.description)
        links = {"Experiment": settings.link(f"experiments/details/{experiment.experiment_id}"),
                 "Pipeline": settings.link(f"pipelines/details/{version.pipeline_id}"
                                           f"/version/{version.pipeline_version_id}")}
        state.links.update(links)
        state.task("Upload", "done", f"pipeline {name}, version {version.display_name}", **links)
        return client, experiment.experiment_id, version

    def _start(self, plan, state, settings, client, experiment_id, version, parameters) -> str:
        from kfp_server_api import V2beta1PipelineVersionReference, V2beta1Run, V2beta1RuntimeConfig

        body = V2beta1Run(
            experiment_id=experiment_id, display_name=f"{plan.pipeline} {state.run_id}",
            pipeline_version_reference=V2beta1PipelineVersionReference(
                pipeline_id=version.pipeline_id, pipeline_version_id=version.pipeline_version_id),
            runtime_config=V2beta1RuntimeConfig(parameters=pipeline_arguments(plan, parameters)))
        run = _call(settings, "creating the run", client.runs.run_service_create_run, run=body)
        link = settings.link(f"runs/details/{run.run_id}")
        state.links["Run"] = link
        state.task("Run", "running", f"run {run.run_id}", Run=link)
        return run.run_id

    def _follow(self, plan, state, settings, client, run_id: str) -> None:
        steps_by_task = Names(plan).steps_by_task
        seen: dict[str, str] = {}
        while True:
            run = _call(settings, "following the run", client.get_run, run_id)
            failures = self._update_steps(state, run, steps_by_task, seen, settings.link(f"runs/details/{run_id}"))
            final = (run.state or "").upper()
            if final in FINAL_RUN_STATES:
                break
            time.sleep(self.poll_interval)
        if final == "SUCCEEDED":
            state.task("Run", "done", "succeeded")
            state.finish("succeeded")
            return
        if final == "CANCELED":
            error = "The run was canceled in Kubeflow Pipelines."
        elif failures:
            step, message = failures[0]
            error = f"Step {step} failed on Kubeflow Pipelines: {message}"
        else:
            error = f"The run ended {final.lower()} on Kubeflow Pipelines: {_message(run.error) or 'no reason given'}"
        for name, step in state.steps.items():
            if step.status in ("pending", "running"):
                state.step(name, "skipped", message=f"not run: the run ended {final.lower()}")
        state.task("Run", "failed", error)
        state.finish("failed", error)

    @staticmethod
    def _update_steps(state, run, steps_by_task, seen, link) -> list[tuple[str, str]]:
        """Copy per-task states into the step states; return (step, message) of failed steps."""
        failures = []
        details = (run.run_details.task_details if run.run_details else None) or []
        for task in details:
            step = steps_by_task.get(task.display_name) or (task.display_name if task.display_name in state.steps
                                                             else None)
            status = STEP_STATES.get((task.state or "").upper())
            if step is None or status is None:
                continue
            message = _message(task.error) or ("canceled" if task.state == "CANCELED" else "")
            if status == "failed":
                failures.append((step, message or "no message from KFP"))
            if seen.get(step) != status:
                seen[step] = status
                state.step(step, status, message=message, links={"KFP run": link})
        return failures

    @staticmethod
    def _stop(state: RunState, skipped: tuple[str, ...]) -> None:
        for task in skipped:
            state.task(task, "skipped")
        state.finish("succeeded")


def _call(settings: KfpSettings, action: str, func, *args, **kwargs):
    try:
        return func(*args, **kwargs)
    except EngineError:
        raise
    except Exception as exc:
        raise api_error(exc, settings, action) from None


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
                              "rename the experiment (--experiment).") from None
    body = V2beta1Experiment(display_name=name, namespace=namespace)
    return client.experiments.experiment_service_create_experiment(experiment=body)


def _upload_version(client, path: Path, name: str, version_name: str, description: str):
    """Upload a new version of pipeline ``name`` (creating the pipeline first if needed).

    A pipeline created here and left without a usable version is deleted again.
    """
    pipeline_id = client.get_pipeline_id(name)
    if pipeline_id is not None:
        return client.pipeline_uploads.upload_pipeline_version(
            str(path), name=version_name, pipelineid=pipeline_id, description=description or None)
    pipeline = client.pipeline_uploads.upload_pipeline(
        str(path), name=name, description=description or None,
        namespace=client.get_user_namespace() or None)
    try:
        versions = client.list_pipeline_versions(pipeline.pipeline_id, page_size=1,
                                                 sort_by="created_at desc").pipeline_versions
        if not versions:
            raise EngineError(f"Kubeflow Pipelines created pipeline {name!r} without a version.")
        return versions[0]
    except BaseException:
        client.delete_pipeline(pipeline.pipeline_id)
        raise
