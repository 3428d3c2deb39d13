"""Run a plan on Kubeflow Pipelines: compile to YAML, upload, run, follow.

The :class:`~kale_magic.engines.base.Engine` protocol, driven by ``launch``:
``compile`` writes the step notebooks (for inspection) and the pipeline YAML,
``upload`` registers it as a new pipeline version, ``run`` creates the run and
follows it, reporting each KFP task's state as the state of its step.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ... import skips
from ...errors import EngineError, KaleError
from ...layout import RunDir
from ...plan import Plan
from ..base import Compiled, Outcome, SnapshotRef, Uploaded
from ...snapshot.remote import is_store
from .client import CONNECTION, api_error, connect, resolve_settings, server_message
from .compiler import NULLABLE, CompileOptions, Names, compile_pipeline, pipeline_arguments
from .workflow import Workflow

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
    live_folder = False  # a pod starts in an empty folder: without the snapshot it has no workspace file

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
        self._healthz: dict = {}
        self._snapshot: tuple[Path, str] | None = None
        self._bundles: list = []  # runtime bundles the YAML imports from the object store
        self._published = False  # whether this run put the snapshot or a runtime bundle in the object store
        self._publish_at_compile = False
        self._unpublished = ""  # why a --compile-only YAML cannot run as it is
        self._selection = None  # a partial run's plan.selection.Selection (select), or None: every step
        self._reused: dict = {}  # step -> reuse.Reused: the values a partial run imports from an earlier run

    def prepare(self, snapshot: SnapshotRef | None, run_dir: RunDir, will_run: bool) -> None:
        """Give every step the snapshot and kale-magic's runtime through the pipeline root:
        ``Kfp.pipeline_root``, else the root KFP itself uses (per namespace on a multi-user install).
        They are published with the upload, or as soon as the YAML is written when the root is a folder
        (``kfp.local``) or nothing will be uploaded (``--compile-only``) and the root is configured. A
        ``--compile-only`` YAML with no configured root refers to what nothing published: the Compile task
        says so, naming the workspace files the steps would miss."""
        from ...snapshot import published_url
        from .compiler import runtime_root

        configured = self.connection.get("pipeline_root")
        if not configured and will_run:  # the default root depends on the install's mode: ask the server
            self.options = dataclasses.replace(self.options, default_root=self._cluster_root())
        root = runtime_root(self.options)
        self.options = dataclasses.replace(self.options, default_root=root)  # looked up once
        self._publish_at_compile = not is_store(root) or (not will_run and bool(configured))
        if not will_run and not configured:
            self._unpublished = _unpublished_note(snapshot, root)
        if snapshot is not None:
            self._snapshot = (snapshot.store, snapshot.id)
            self.options = dataclasses.replace(self.options, snapshot_url=published_url(root, snapshot.id),
                                               workspace=snapshot.root)  # its modules are not installed

    def _connect(self) -> dict:
        """Connect once per run; the server's healthz (``tag_name``, ``multi_user``)."""
        from .versions import healthz

        if self._client is None:
            self._settings = resolve_settings(self.host, self.ui_host, config=self.connection)
            self._client = connect(self._settings)
            self._healthz = self._call("reading the server's version", healthz, self._client)
        return self._healthz

    def _cluster_root(self) -> str:
        """KFP's default root for this user: the ``kfp-launcher`` ConfigMap's, else by the mode healthz
        reports, in the namespace set, else the kfp context's, else this pod's. An unreachable server is
        the Upload task's error (with the YAML kept), not the Snapshot task's."""
        from .delivery import default_root

        try:
            multi_user = bool(self._connect().get("multi_user"))
        except KaleError:  # the Upload task says why; the YAML it keeps takes the --compile-only default
            self._client = None
            return default_root(self.options.namespace)
        namespace = self.options.namespace or (self._client.get_user_namespace() or None if multi_user else None)
        return default_root(namespace, multi_user)

    # Select ---------------------------------------------------------------------------------
    def select(self, plan: Plan, selection) -> dict[str, str]:
        """Run only ``selection``'s steps (the sub-pipeline); the values they load from unselected steps are
        imported from an earlier KFP run's artifacts (:mod:`.reuse`): step -> that run, or a KaleError
        naming a value no run can supply, before anything is uploaded."""
        from ...layout import KaleDir
        from .reuse import find

        kale = KaleDir(plan.notebook_path.parent if plan.notebook_path else Path.cwd())  # as the pipeline file's
        self._reused = find(plan, selection, self.options.pipeline_root, kale, self.name)
        self._selection = selection
        return {step: reused.run_id for step, reused in self._reused.items()}

    def _selected(self, plan: Plan) -> Plan:
        """The plan this engine compiles and runs: the selected steps' sub-pipeline in a partial run."""
        return self._selection.subplan(plan) if self._selection else plan

    # Compile --------------------------------------------------------------------------------
    def compile(self, plan: Plan, run_dir: RunDir) -> Compiled:
        """Step notebooks under the run (to read what each step runs) and the pipeline YAML."""
        from ...step.notebooks import write_step_notebooks
        from .reuse import record

        record(plan, run_dir, self._reused)
        plan = self._selected(plan)
        notebooks = write_step_notebooks(plan, run_dir)
        self._bundles = []
        imports = {(r.step, name): uri for r in self._reused.values() for name, uri in r.values.items()}
        notes: list[str] = []  # the image advice (footprint.image_advice)
        self.pipeline_file = compile_pipeline(plan, self.pipeline_file, self.options, bundles=self._bundles,
                                              imports=imports, notes=notes)
        if self._publish_at_compile:
            self._publish()
        return Compiled(notebooks, self.pipeline_file, summary="; ".join(filter(None, [self._unpublished, *notes])))

    def _publish(self) -> None:
        """Put the snapshot and the runtime bundles where the YAML imports them from."""
        from ...snapshot import publish
        from .compiler import runtime_root
        from .delivery import publish_bundle

        self._published = bool(self._snapshot or self._bundles) and is_store(runtime_root(self.options))
        if self._snapshot:
            publish(*self._snapshot, runtime_root(self.options))
            self._snapshot = None
        for bundle in self._bundles:
            publish_bundle(bundle)
        self._bundles = []

    # Upload ---------------------------------------------------------------------------------
    def upload(self, plan: Plan, state: RunState, compiled: Compiled) -> Uploaded:
        """Upload the YAML as a new pipeline version (publishing the snapshot first), once the server's
        version is known to run it."""
        from .versions import check

        try:
            host = resolve_settings(self.host, self.ui_host, config=self.connection).host
            state.task("Upload", "running", f"to {host}")
            tag = self._connect().get("tag_name")
            note = check(tag, self._settings.host, plan, self.options)
            self._check_pins(plan)
            self._publish()
            name = Names(plan).pipeline
            experiment = self._call("getting or creating the experiment", _experiment, self._client,
                                    plan.experiment)
            self._version = self._call("uploading the pipeline", _upload_version, self._client,
                                       self.pipeline_file, name, f"{name}-{state.run_id}", plan.description,
                                       lambda exc: api_error(exc, self._settings, "uploading the pipeline"))
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

    def _check_pins(self, plan: Plan) -> None:
        """Every pin the environment tasks install exists for the step image's platform (asked of pip once
        per pin set in this process)."""
        from .bootstrap import kernel_python, pip_index_options
        from .requirements import check_available
        from .setup import plan_setup

        if not self.options.install_packages:
            return
        options = tuple(pip_index_options(self.options.pip_index_urls))
        for env in plan_setup(plan, self.options).environments.values():
            check_available(env.requirements, options, kernel_python())

    # Run ------------------------------------------------------------------------------------
    def cancel(self) -> None:
        self._cancel.set()

    def run(self, plan: Plan, state: RunState, run_dir: RunDir, compiled: Compiled) -> Outcome:
        """Create the run from the uploaded version and follow it to its end."""
        from ...plan.selection import NOT_SELECTED

        plan = self._selected(plan)
        for step, reused in self._reused.items():
            state.step(step, "cached", cached_from=reused.run_id, skip=skips.NOT_SELECTED,
                       message=f"reused from run {reused.run_id} ({NOT_SELECTED})")
        try:
            run_id = self._start(plan, state, plan.parameters)
            outcome = self._follow(plan, state, run_id, run_dir)
        except KaleError as err:
            return Outcome("failed", str(err))
        from .compiler import runtime_root

        # The artifacts are under Kfp.pipeline_root, else under KFP's default root (the YAML names none); the
        # notebook reads them there when it was set, or when this run already wrote there (its credentials work)
        root = runtime_root(self.options)
        if is_store(root) and (self.options.pipeline_root or self._published):
            from .results import collect

            try:
                state.add_metrics(collect(plan, root, run_id, run_dir, self._origins(plan, state, run_id, root),
                                          reused={r.step: r.values for r in self._reused.values()}))
            except KaleError as err:
                return Outcome("failed", outcome.error or f"the run's results could not be read from {root}: {err}")
        return outcome

    def _origins(self, plan: Plan, state: RunState, run_id: str, root: str) -> dict[str, str]:
        """The run whose outputs each cached step reused (see :mod:`.origins`); a step whose origin is not
        found (or when the API cannot be asked) is left out, so its values are not listed."""
        import yaml

        from .origins import MAX_RUNS, find_origins
        from .results import has_outputs

        names = Names(plan)
        hits = [name for name, step in state.steps.items() if step.status == "cached" and name in names.tasks]
        cached = [names.tasks[name] for name in hits]  # not the steps a partial run imported (not in the plan)
        if not cached:
            return {}
        spec = next(yaml.safe_load_all(self.pipeline_file.read_text(encoding="utf-8")))
        try:
            found = find_origins(self._client, spec, pipeline_arguments(plan, plan.parameters), run_id, cached,
                                 lambda run, task: has_outputs(root, names.pipeline, run, task),
                                 namespace=self._client.get_user_namespace() or None)
        except KaleError:
            raise
        except Exception as exc:  # the API refused a list or a version: values of cached steps stay unlisted
            found, why = {}, f"the runs could not be listed ({server_message(exc)})"
        else:
            why = f"no run among the last {MAX_RUNS} of this pipeline computed it"
        origins = {step: found[task] for step, task in names.tasks.items() if task in found}
        for step in hits:
            state.step(step, "cached", message=f"KFP cache hit: outputs of KFP run {origins[step]}" if step in origins
                       else f"KFP cache hit; its values cannot be loaded: {why}")
        return origins

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

    def _follow(self, plan: Plan, state: RunState, run_id: str, run_dir: RunDir) -> Outcome:
        steps_by_task = Names(plan).steps_by_task
        seen: dict[str, str] = {}
        failures: list[tuple[str, str]] = []  # a step fails once, often polls before the run ends
        terminating = False
        while True:
            run = self._poll(run_id)
            failures += _update_steps(state, run, steps_by_task, seen, state.links["run"],
                                     lambda pod: self._read_log(run_id, pod), _once(lambda: self._workflow(run_id)),
                                     keep_log=lambda step, log: _keep_log(run_dir, step, log))
            final = (run.state or "").upper()
            if final in FINAL_RUN_STATES:
                break
            if terminating:  # CANCELING until the workflow has stopped: keep polling at the same pace
                time.sleep(self.poll_interval)
            elif self._cancel.wait(self.poll_interval):
                terminating = True
                self._call("canceling the run", self._client.runs.run_service_terminate_run, run_id,
                           _request_timeout=REQUEST_TIMEOUT)
        if final == "SUCCEEDED":
            for name, step in state.steps.items():  # inside a dsl.If whose gate said no: never created
                if step.status in ("pending", "running"):
                    state.step(name, "skipped", message=_not_triggered(plan, name), skip=skips.CONDITION)
            return Outcome("succeeded")
        if final == "CANCELED":
            error = "the run was canceled in Kubeflow Pipelines"
        elif failures:
            error = "step '{}' failed on Kubeflow Pipelines: {}".format(*failures[0])
        else:
            error = (self._task_failure(run_id, steps_by_task) or f"the run ended {final.lower()} on Kubeflow "
                     f"Pipelines: {_message(run.error) or 'no reason given'}")
        for name, step in state.steps.items():
            if step.status in ("pending", "running"):
                state.step(name, "skipped", message=f"skipped: the run ended {final.lower()}",
                           skip=skips.CANCEL if final == "CANCELED" else skips.FAILURE)
        return Outcome("failed", error)

    def _task_failure(self, run_id: str, steps_by_task: dict[str, str]) -> str:
        """What failed a run in which no step failed: another task (the ``kale-environment`` task), in the
        words its pod printed; "" when the workflow names none."""
        workflow = self._workflow(run_id)
        for task in workflow.failed_tasks() if workflow else []:
            if task not in steps_by_task:
                pod, note = workflow.failed_pod(task)
                said = _step_error(self._read_log(run_id, pod) if pod else None) or note or "no message from KFP"
                return f"task '{task}' failed on Kubeflow Pipelines: {said}"
        return ""

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
        """What a pod printed, through the API's log endpoint; None when there is no such pod."""
        api = self._client._run_api.api_client
        try:
            response = api.call_api(f"/apis/v1alpha1/runs/{run_id}/nodes/{pod}/log", "GET",
                                    auth_settings=["Bearer"], _preload_content=False,
                                    _request_timeout=REQUEST_TIMEOUT)
        except Exception:
            return None
        text = response.data.decode("utf-8", "replace")
        if text.startswith("{") and '"error_message"' in text[:200]:
            return None  # run_log_server.go writes 200 before it knows: a missing pod is an error body
        return text

    def _workflow(self, run_id: str) -> Workflow | None:
        """The run's Argo workflow (the v1beta1 run's ``workflow_manifest``); None when it cannot be read."""
        api = self._client._run_api.api_client
        try:
            response = api.call_api(f"/apis/v1beta1/runs/{run_id}", "GET", auth_settings=["Bearer"],
                                    _preload_content=False, _request_timeout=REQUEST_TIMEOUT)
            runtime = json.loads(response.data or b"{}").get("pipeline_runtime") or {}
        except Exception:
            return None
        return Workflow.parse(runtime.get("workflow_manifest"))

    def _call(self, action: str, func, *args, **kwargs):
        try:
            return func(*args, **kwargs)
        except KaleError:
            raise
        except Exception as exc:
            raise api_error(exc, self._settings, action) from None


def _unpublished_note(snapshot: SnapshotRef | None, root: str) -> str:
    """The Compile task's warning for a ``--compile-only`` YAML whose imports nothing published."""
    files = _workspace_files(snapshot) if snapshot is not None else []
    shown = ", ".join(files[:5]) + (f" and {len(files) - 5} more" if len(files) > 5 else "")
    what = f"the workspace files ({shown}) and kale-magic's runtime" if files else "kale-magic's runtime"
    return (f"not published: {what} would be read from {root}, which nothing uploaded with --compile-only; "
            "set Kfp.pipeline_root (with the store's credentials) to publish them as the YAML is written, "
            "or run it with %kale_run")


def _workspace_files(snapshot: SnapshotRef) -> list[str]:
    """The files of the snapshot the steps would work in, but the notebook itself."""
    import json

    manifest = json.loads(Path(snapshot.manifest).read_text(encoding="utf-8"))
    notebook = snapshot.notebook.name if snapshot.notebook else None
    return sorted(f["path"] for f in manifest.get("files", []) if f["path"] != notebook)


def _keep_log(run_dir: RunDir, step: str, log: str) -> None:
    """A failed step's pod log, where a local step's log is: %kale_debug --failed finds its failing line."""
    from ...files import atomic_write

    run_dir.log(step).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(run_dir.log(step), log)


def _update_steps(state, run, steps_by_task, seen, link, read_log, workflow,
                  keep_log=lambda step, log: None) -> list[tuple[str, str]]:
    """Copy per-task states into the step states; return (step, message) of the failed steps.

    The API builds task details from Argo's nodes (see :mod:`.workflow`): per step a ``<task>-driver``
    pod, the ``<task>`` executor DAG and an inner executor. They carry no error text, no CACHED state and
    nothing that ties an executor to its step, so the run's workflow (``workflow()``, read at most once
    per poll and only when a step has just ended) says whether the step's own executor was skipped by the
    cache and which pod ran its last attempt, whose log holds what the step printed. Without the workflow
    a step reads as succeeded, never as cached.
    """
    failures = []
    details = (run.run_details.task_details if run.run_details else None) or []
    canceled = (run.state or "").upper() in ("CANCELED", "CANCELING")
    for step, (task_name, status, driver, canceled_task) in _step_states(details, steps_by_task, state).items():
        if seen.get(step) in ("succeeded", "cached", "failed", "skipped"):
            continue
        message, skip = "", ""
        if status == "failed" and canceled:
            status, message, skip = "skipped", "canceled", skips.CANCEL
        elif status == "failed":
            message, log = _failure(task_name, workflow(), read_log, driver=driver)
            if log:
                keep_log(step, log)
            failures.append((step, message))
        elif status == "succeeded" and (found := workflow()) is not None:
            if found.cached(task_name):
                status, message = "cached", "KFP cache hit"
            elif (attempts := found.attempts(task_name)) > 1:
                message = f"succeeded on attempt {attempts}"
        elif status == "skipped" and canceled_task:
            message, skip = "canceled", skips.CANCEL
        if seen.get(step) != status:
            seen[step] = status
            state.step(step, status, message=message, skip=skip, links={"KFP run": link})
    return failures


def _not_triggered(plan: Plan, name: str) -> str:
    """Why a step of a successful run never ran: an ``--if`` above it was false (its gate task says which
    and why; the API does not return the gate's output, so this names the candidates)."""
    from .compiler import condition_gates

    said = " or ".join(f"the condition {plan.steps[g].options.condition} of step '{g}'"
                       for g in condition_gates(plan).get(name, ()))
    return (f"skipped: {said} was false (the kale-gate task's output says why)" if said
            else "skipped: Kubeflow Pipelines did not run it")


def _step_states(details, steps_by_task, state) -> dict[str, tuple[str, str, bool, bool]]:
    """Per step: (task name, status, whether its driver failed, whether it was canceled), from every
    detail of its task: a ``--foreach`` step has one executor DAG per item, so it has succeeded only when
    all of them have, and failed when one has. A driver counts only when it failed: then no executor ran."""
    found: dict[str, list] = {}
    for task in details:
        name = task.display_name or ""
        driver = name.endswith("-driver")
        task_name = name[:-len("-driver")] if driver else name
        step = steps_by_task.get(task_name) or (task_name if task_name in state.steps else None)
        status = STEP_STATES.get((task.state or "").upper())
        if step is not None and status is not None and (not driver or status == "failed"):
            found.setdefault(step, [task_name, []])[1].append((status, driver, task.state == "CANCELED"))
    combined = {}
    for step, (task_name, entries) in found.items():
        statuses = [status for status, _, _ in entries]
        status = next(s for s in ("failed", "running", "pending", "succeeded", "cached", "skipped") if s in statuses)
        if status == "pending" and {"succeeded", "skipped"} & set(statuses):
            status = "running"  # some items are done, others wait
        driver = all(d for st, d, _ in entries if st == "failed") if status == "failed" else False
        combined[step] = (task_name, status, driver, any(c for _, _, c in entries))
    return combined


def _failure(task: str, workflow, read_log, driver: bool) -> tuple[str, str | None]:
    """What the failed step printed (its last attempt's pod log, or its driver's), else Argo's message;
    and the step's own pod log, when there is one."""
    if workflow is None:
        return "no message from KFP (its workflow could not be read)", None
    pod, note = workflow.failed_driver(task) if driver else workflow.failed_pod(task)
    log = read_log(pod) if pod else None
    said = _step_error(log) or note or "no message from KFP"
    if driver:
        return f"the KFP driver failed: {said}", None
    attempts = workflow.attempts(task)
    return (f"{said} (after {attempts} attempts)" if attempts > 1 else said), log


def _once(func):
    """``func()`` computed on the first call only (the workflow, read at most once per poll)."""
    cache = []

    def get():
        if not cache:
            cache.append(func())
        return cache[0]

    return get


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


def _upload_version(client, path: Path, name: str, version_name: str, description: str, explain):
    """Upload a new version of pipeline ``name``, creating the pipeline first if needed.

    The pipeline is looked up by name in the user's namespace (``kfp.Client.get_pipeline_id`` only
    sees shared pipelines, so on a multi-user installation the second run would upload the same name
    again and get HTTP 409). A pipeline created here and left without a usable version is deleted again;
    when that fails too, the error says so after the original one (``explain`` makes an API error readable).
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
    except BaseException as exc:
        left = _delete_pipeline(client, pipeline.pipeline_id, name)
        error = exc if isinstance(exc, KaleError) or not isinstance(exc, Exception) else explain(exc)
        if not left or not isinstance(error, KaleError):
            raise
        raise EngineError(f"{str(error).rstrip('.')}; {left}") from None


def _delete_pipeline(client, pipeline_id: str, name: str) -> str:
    """Delete a pipeline and its versions; "" when done, else a sentence saying what was left.

    The API server refuses to delete a pipeline that still has versions (``ResourceManager.DeletePipeline``
    in ``backend/src/apiserver/resource/resource_manager.go``, without ``cascade``), so the versions go first.
    """
    try:
        token = ""
        while True:
            page = client.list_pipeline_versions(pipeline_id, page_token=token, page_size=100)
            for version in page.pipeline_versions or []:
                client.delete_pipeline_version(pipeline_id, version.pipeline_version_id)
            token = page.next_page_token
            if not token:
                break
        client.delete_pipeline(pipeline_id)
        return ""
    except Exception as exc:
        return (f"the pipeline {name!r} ({pipeline_id}) this upload created could not be deleted "
                f"({server_message(exc)}): delete it in the Kubeflow Pipelines UI")


def _pipeline_id(client, name: str, namespace: str | None) -> str | None:
    """The id of the pipeline named ``name`` in ``namespace`` (shared pipelines when None)."""
    import json

    predicate = {"operation": "EQUALS", "key": "display_name", "stringValue": name}
    found = client.list_pipelines(filter=json.dumps({"predicates": [predicate]}), namespace=namespace,
                                  page_size=2).pipelines or []
    return found[0].pipeline_id if found else None
