"""Recurring runs of a notebook's pipeline on Kubeflow Pipelines, through ``kfp.Client`` (API v2beta1).

A schedule is created from the pipeline version the Upload task just registered, so every run it
starts uses the snapshot and the pinned environment taken now, with this run's parameters.  Its name
is ``<pipeline>-<run id's suffix>``; ``%kale_schedules`` lists the notebook's schedules (those of its
pipeline) with their next fire time and the state of the last run each started, and pauses, resumes
or deletes one by name (or id).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from ...errors import KaleError
from ...cron import Schedule, next_fire

REQUEST_TIMEOUT = 60


def schedule_name(pipeline: str, run_id: str) -> str:
    return f"{pipeline}-{run_id.rsplit('-', 1)[-1]}"


def create(client, schedule: Schedule, *, name: str, description: str, experiment_id: str, pipeline_id: str,
           version_id: str, parameters: dict, namespace: str | None):
    """The created recurring run (``V2beta1RecurringRun``)."""
    from kfp_server_api import (V2beta1CronSchedule, V2beta1PipelineVersionReference, V2beta1RecurringRun,
                                V2beta1RuntimeConfig, V2beta1Trigger)

    body = V2beta1RecurringRun(
        display_name=name, description=description, experiment_id=experiment_id, namespace=namespace,
        pipeline_version_reference=V2beta1PipelineVersionReference(pipeline_id=pipeline_id,
                                                                   pipeline_version_id=version_id),
        runtime_config=V2beta1RuntimeConfig(parameters=parameters),
        trigger=V2beta1Trigger(cron_schedule=V2beta1CronSchedule(
            cron=schedule.cron, start_time=schedule.start, end_time=schedule.end)),
        max_concurrency=str(schedule.max_concurrency), no_catchup=not schedule.catchup, mode="ENABLE")
    return client.recurring_runs.recurring_run_service_create_recurring_run(recurring_run=body,
                                                                              _request_timeout=REQUEST_TIMEOUT)


@dataclass(frozen=True)
class Listed:
    name: str
    id: str
    cron: str
    status: str  # ENABLED / DISABLED
    next_fire: datetime | None
    last_run: str  # state of the newest run it started, or "no run yet"


def of_pipeline(client, pipeline_id: str, namespace: str | None) -> list:
    """The recurring runs of one pipeline (every page), oldest first."""
    found, token = [], ""
    while True:
        page = client.list_recurring_runs(page_token=token, page_size=100, namespace=namespace)
        found += [r for r in page.recurring_runs or []
                  if r.pipeline_version_reference and r.pipeline_version_reference.pipeline_id == pipeline_id]
        token = page.next_page_token or ""
        if not token:
            return found


def listing(client, recurring_runs, now: datetime | None = None) -> list[Listed]:
    now = now or datetime.now(timezone.utc)
    last = _last_runs(client, {r.recurring_run_id for r in recurring_runs})
    rows = []
    for r in recurring_runs:
        cron = r.trigger.cron_schedule.cron if r.trigger and r.trigger.cron_schedule else ""
        enabled = (r.status or "").upper() == "ENABLED"
        end = r.trigger.cron_schedule.end_time if cron else None
        start = r.trigger.cron_schedule.start_time if cron else None
        fire = next_fire(cron, max(now, start) if start else now) if enabled and cron else None
        if fire and end and fire > end:
            fire = None
        rows.append(Listed(r.display_name, r.recurring_run_id, cron, (r.status or "").upper(), fire,
                           last.get(r.recurring_run_id, "no run yet")))
    return rows


def _last_runs(client, ids: set[str]) -> dict[str, str]:
    """recurring run id -> state of the newest run it started."""
    newest: dict[str, str] = {}
    for run in started_runs(client, ids):
        newest.setdefault(run.recurring_run_id, (run.state or "").upper())
    return newest


def started_runs(client, ids: set[str]) -> list:
    """The KFP runs the recurring runs ``ids`` started, newest first."""
    found, token = [], ""
    while ids:
        page = client.list_runs(page_token=token, page_size=100, sort_by="created_at desc")
        found += [run for run in page.runs or [] if getattr(run, "recurring_run_id", None) in ids]
        token = page.next_page_token or ""
        if not token:
            break
    return found


FINAL = {"SUCCEEDED": "succeeded", "FAILED": "failed", "CANCELED": "failed", "SKIPPED": "skipped"}


def record_started_runs(client, settings, recurring_runs, store, pipeline: str, experiment_names: dict) -> int:
    """Put the ended runs the schedules started into the run store (``%kale_runs`` shows them with their
    schedule's name); a run still going is recorded once it has ended, at a later listing. How many were new."""
    from ...history.store import RunRecord

    names = {r.recurring_run_id: r.display_name for r in recurring_runs}
    new = 0
    for run in started_runs(client, set(names)):
        status = FINAL.get((run.state or "").upper())
        if status is None or store.find(run.run_id) is not None:
            continue
        error = (getattr(run.error, "message", None) or "") if run.error else ""
        store.save(RunRecord(
            run_id=run.run_id, experiment=experiment_names.get(run.experiment_id, run.experiment_id or ""),
            pipeline=pipeline, engine="kfp", status=status, started=_seconds(run.created_at),
            ended=_seconds(run.finished_at) if run.finished_at else None,
            parameters=dict((run.runtime_config.parameters if run.runtime_config else None) or {}),
            kfp_run_id=run.run_id, error=error if status == "failed" else "",
            links={"scheduled by": names[run.recurring_run_id], "run": settings.link(f"runs/details/{run.run_id}")}))
        new += 1
    return new


def _seconds(moment) -> float:
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    return moment.timestamp()


def table(rows: list[Listed], pipeline: str) -> str:
    if not rows:
        return (f"kale: no schedules of pipeline {pipeline}; create one with %kale_run --engine kfp "
                "--schedule \"0 0 2 * * *\"")
    header = ("name", "cron", "status", "next run (UTC)", "last run")
    cells = [(r.name, r.cron, r.status.lower(), r.next_fire.strftime("%Y-%m-%d %H:%M:%S") if r.next_fire else "—",
              r.last_run.lower()) for r in rows]
    widths = [max(len(c[i]) for c in [header, *cells]) for i in range(len(header))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in [header, *cells])


def find(rows: list, name: str):
    """The recurring run named (or with the id) ``name`` among ``rows``; KaleError listing the names."""
    found = [r for r in rows if name in (r.display_name, r.recurring_run_id)]
    if len(found) != 1:
        known = ", ".join(r.display_name for r in rows) or "none"
        what = "no schedule" if not found else f"{len(found)} schedules"
        raise KaleError(f"{what} of this notebook's pipeline is named {name!r} (schedules: {known}); "
                        "%kale_schedules lists them.")
    return found[0]


def change(client, recurring_run, action: str) -> str:
    """Pause (disable), resume (enable) or delete one recurring run; the sentence saying what was done."""
    api = client.recurring_runs
    call = {"pause": api.recurring_run_service_disable_recurring_run,
            "resume": api.recurring_run_service_enable_recurring_run,
            "delete": api.recurring_run_service_delete_recurring_run}[action]
    call(recurring_run.recurring_run_id, _request_timeout=REQUEST_TIMEOUT)
    done = {"pause": "paused", "resume": "resumed", "delete": "deleted"}[action]
    return f"kale: schedule {recurring_run.display_name} {done}"


def manage(host: str | None, config: dict, pipeline: str, action: str | None = None, name: str | None = None,
           store=None) -> str:
    """``%kale_schedules``: the table of the pipeline's schedules (recording the runs they started in
    ``store``), or what pausing/resuming/deleting one did."""
    from .client import api_error, connect, resolve_settings
    from .compiler import k8s_name

    settings = resolve_settings(host, config=config)
    client = connect(settings)
    kfp_name = k8s_name(pipeline, prefix="pipeline")  # as the Upload task named it
    try:
        runs = _of_notebook(client, kfp_name)
        if action is None:
            text = table(listing(client, runs), kfp_name)
            if store is not None and runs:
                new = _record(client, settings, runs, store, pipeline)
                text += f"\n{new} runs they started are new in %kale_runs" if new else ""
            return text
        return change(client, find(runs, name), action)
    except KaleError:
        raise
    except Exception as exc:
        raise api_error(exc, settings, f"{action or 'listing'} schedules") from None


def sync(host: str | None, config: dict, pipeline: str, store) -> str:
    """``%kale_runs``: record the ended runs the pipeline's schedules started, as ``%kale_schedules`` does;
    what to tell the user ("" when nothing is new).  A server that cannot be read is said in one line and
    never stops ``%kale_runs``: the runs recorded here still show."""
    from .client import api_error, connect, resolve_settings
    from .compiler import k8s_name

    try:
        settings = resolve_settings(host, config=config)
        client = connect(settings)
        try:
            runs = _of_notebook(client, k8s_name(pipeline, prefix="pipeline"))
            new = _record(client, settings, runs, store, pipeline) if runs else 0
        except KaleError:
            raise
        except Exception as exc:
            raise api_error(exc, settings, "reading the runs of the schedules") from None
    except KaleError as exc:
        return (f"kale: the runs this notebook's schedules started were not read ({str(exc).rstrip('.')}); "
                "showing the runs recorded here")
    return f"kale: {new} runs this notebook's schedules started are new here" if new else ""


def _of_notebook(client, kfp_name: str) -> list:
    from .engine import _pipeline_id

    namespace = client.get_user_namespace() or None
    pipeline_id = _pipeline_id(client, kfp_name, namespace)
    return of_pipeline(client, pipeline_id, namespace) if pipeline_id else []


def _record(client, settings, runs, store, pipeline: str) -> int:
    experiments = {r.experiment_id: client.get_experiment(experiment_id=r.experiment_id).display_name
                   for r in runs if r.experiment_id}
    return record_started_runs(client, settings, runs, store, pipeline, experiments)
