"""``%kale_run --schedule`` and ``%kale_schedules`` against the test API server's recurring-run calls; cron
checked (and a five-field one converted) before anything is uploaded; refused on the local engine."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from kfp_api_server import FakeKfpServer

from kale_magic.errors import KaleError
from kale_magic.cron import next_fire, parse_schedule, six_fields

CELLS = ["%%parameters\nn = 3", "%%step load\ndata = list(range(n))", "%%step total\ntotal = sum(data)"]
# These tests are about the recurring-run calls: the steps read no workspace file and install nothing, so the
# upload needs no object store (the delivery of snapshots and the runtime is tested in test_snapshot_kfp).
NO_STORE = "%config Kfp.install_packages = False"


@pytest.fixture
def server(monkeypatch, tmp_path):
    for var in ("KF_PIPELINES_ENDPOINT", "KF_PIPELINES_UI_ENDPOINT", "KF_PIPELINES_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(tmp_path / "no-token"))
    with FakeKfpServer() as srv:
        yield srv


def test_a_schedule_is_a_recurring_run_of_the_uploaded_version_with_the_runs_parameters(kernel, server, capsys):
    kernel.cells(*CELLS, NO_STORE)
    run = kernel.run(f'%kale_run --host {server.url} --param n=5 --schedule "0 30 2 * * *" --max-concurrency 2 --no-snapshot '
                     "--start 2026-12-24T02:00:00+00:00 --end 2027-12-24T02:00:00+00:00 --no-catchup")
    assert run.status == "scheduled" and not server.runs
    (job,) = server.recurring_runs.values()
    (version,) = server.versions.values()
    assert job["pipeline_version_reference"] == {"pipeline_id": version["pipeline_id"],
                                                 "pipeline_version_id": version["pipeline_version_id"]}
    assert server.spec_of(version["pipeline_version_id"]) == run.pipeline_file.read_text()  # pinned: this YAML
    assert job["runtime_config"]["parameters"] == {"n": 5}
    cron = job["trigger"]["cron_schedule"]
    assert cron["cron"] == "0 30 2 * * *"
    assert [datetime.fromisoformat(cron[k].replace("Z", "+00:00")) for k in ("start_time", "end_time")] == [
        datetime(2026, 12, 24, 2, tzinfo=timezone.utc), datetime(2027, 12, 24, 2, tzinfo=timezone.utc)]
    assert (job["max_concurrency"], job["no_catchup"], job["status"]) == ("2", True, "ENABLED")
    assert job["display_name"].endswith("-" + run.id.rsplit("-", 1)[1])
    assert run.state.tasks["Run"].message == f"schedule {job['display_name']}: 0 30 2 * * *"
    assert run.links["schedule"].endswith(f"/#/recurringrun/details/{job['recurring_run_id']}")


def test_a_five_field_cron_is_converted_and_said(kernel, server):
    kernel.cells(*CELLS, NO_STORE)
    run = kernel.run(f'%kale_run --host {server.url} --schedule "30 2 * * 1-5" --no-snapshot')
    (job,) = server.recurring_runs.values()
    assert job["trigger"]["cron_schedule"]["cron"] == "0 30 2 * * 1-5"
    assert "the five-field cron '30 2 * * 1-5' is '0 30 2 * * 1-5' in KFP's six-field form" in \
        run.state.tasks["Run"].message


@pytest.mark.parametrize("line, message", [
    ('--schedule "0 0 25 * * *"', "'25' is out of range for the hour field (0-23)"),
    ('--schedule "* * *"', "has 3 fields; KFP's cron has six"),
    ('--schedule "@fortnightly"', "unknown descriptor"),
    ('--schedule "0 0 2 * * *" --max-concurrency 11', "--max-concurrency 11: Kubeflow Pipelines runs 1 to 10"),
    ('--schedule "0 0 2 * * *" --start tomorrow', "--start 'tomorrow' is not an ISO 8601 time"),
    ('--schedule "0 0 2 * * *" --start 2027-01-01T00:00 --end 2026-01-01T00:00', "is not after --start"),
    ("--max-concurrency 2", "--max-concurrency only applies with --schedule CRON"),
])
def test_a_bad_schedule_is_refused_before_anything_is_uploaded(kernel, server, line, message):
    kernel.cells(*CELLS, NO_STORE)
    error = kernel.error(f"%kale_run --host {server.url} {line}")
    assert isinstance(error, KaleError) and message in str(error), str(error)
    assert server.requests == []


def test_the_local_engine_refuses_with_an_equivalent_crontab_line(kernel, tmp_path):
    kernel.cells(*CELLS, NO_STORE)
    error = kernel.error('%kale_run --engine local --param n=7 --schedule "0 30 2 * * *"')
    assert isinstance(error, KaleError)
    assert str(error).startswith("the local engine cannot schedule runs")
    assert str(error).endswith(f"30 2 * * * cd {tmp_path} && kale-magic run NOTEBOOK.ipynb --param n=7")
    assert not (tmp_path / ".kale" / "runs").exists()


def test_kale_schedules_lists_pauses_resumes_and_deletes(kernel, server, capsys, tmp_path):
    kernel.cells(*CELLS, NO_STORE)
    kernel.run(f"%config Kale.host = {server.url!r}")
    run = kernel.run('%kale_run --schedule "0 0 2 * * *" --pipeline nightly --no-snapshot')
    (job,) = server.recurring_runs.values()
    name = job["display_name"]
    server.fire_schedule(job["recurring_run_id"], "FAILED")
    capsys.readouterr()
    kernel.run("%kale_schedules --pipeline nightly")
    out = capsys.readouterr().out
    fire = next_fire("0 0 2 * * *", datetime.now(timezone.utc)).strftime("%Y-%m-%d %H:%M:%S")
    row = next(line for line in out.splitlines() if line.startswith(name))
    assert row.split() == [name, "0", "0", "2", "*", "*", "*", "enabled", *fire.split(), "failed"], out
    assert "1 runs they started are new in %kale_runs" in out
    fired = [r for r in server.runs.values() if r.get("recurring_run_id")]
    from kale_magic.history.store import RunStore

    with RunStore.for_workspace(tmp_path) as store:
        record = store.get(fired[0]["run_id"])
    assert (record.status, record.pipeline, record.engine, record.links["scheduled by"]) == (
        "failed", "nightly", "kfp", name)
    table = repr(kernel.run("%kale_runs"))
    short_id = fired[0]["run_id"].rsplit("-", 1)[-1]  # %kale_runs shows run ids by their random end
    assert name in table and any(line.split()[:1] == [short_id] for line in table.splitlines()), table
    kernel.run("%kale_schedules --pipeline nightly")
    assert "new in %kale_runs" not in capsys.readouterr().out  # recorded once
    kernel.run(f"%kale_schedules --pipeline nightly --pause {name}")
    assert server.recurring_runs[job["recurring_run_id"]]["status"] == "DISABLED"
    assert f"kale: schedule {name} paused" in capsys.readouterr().out
    kernel.run("%kale_schedules --pipeline nightly")
    assert "disabled  —" in capsys.readouterr().out
    kernel.run(f"%kale_schedules --pipeline nightly --resume {name}")
    assert server.recurring_runs[job["recurring_run_id"]]["status"] == "ENABLED"
    error = kernel.error("%kale_schedules --pipeline nightly --delete nope")
    assert f"no schedule of this notebook's pipeline is named 'nope' (schedules: {name})" in str(error)
    kernel.run(f"%kale_schedules --pipeline nightly --delete {name}")
    assert server.recurring_runs == {}
    assert run.status == "scheduled"


def test_kale_runs_records_and_shows_the_runs_a_schedule_started(kernel, server, capsys):
    kernel.cells(*CELLS, NO_STORE)
    kernel.run(f"%config Kale.host = {server.url!r}")
    kernel.run('%kale_run --schedule "0 0 2 * * *" --no-snapshot')
    (job,) = server.recurring_runs.values()
    server.fire_schedule(job["recurring_run_id"], "SUCCEEDED")
    (fired,) = [r for r in server.runs.values() if r.get("recurring_run_id")]
    capsys.readouterr()
    table = repr(kernel.run("%kale_runs"))  # no %kale_schedules before it
    assert "kale: 1 runs this notebook's schedules started are new here" in capsys.readouterr().out
    row = next(line for line in table.splitlines() if line.split()[:1] == [fired["run_id"].rsplit("-", 1)[-1]])
    assert job["display_name"] in row and "succeeded" in row, table
    kernel.run("%kale_runs")
    assert "new here" not in capsys.readouterr().out  # recorded once


def test_kale_runs_still_shows_the_local_runs_when_the_host_cannot_be_read(kernel, capsys):
    kernel.cells(*CELLS)
    run = kernel.run("%kale_run --engine local")
    kernel.run("%config Kale.host = 'http://127.0.0.1:9'")  # nothing listens on the discard port
    capsys.readouterr()
    table = repr(kernel.run("%kale_runs"))
    out = capsys.readouterr().out
    (note,) = [line for line in out.splitlines() if line.startswith("kale:")]
    assert note.startswith("kale: the runs this notebook's schedules started were not read (Cannot reach"), out
    assert note.endswith("KF_PIPELINES_ENDPOINT); showing the runs recorded here"), out
    assert run.id.rsplit("-", 1)[-1] in table


@pytest.mark.parametrize("given, six", [("0 2 * * *", "0 0 2 * * *"), ("*/15 * * * * ?", "*/15 * * * * ?"),
                                        ("0 0 9 * JAN-MAR MON-FRI", "0 0 9 * JAN-MAR MON-FRI"),
                                        ("@daily", "@daily"), ("@every 1h30m", "@every 1h30m")])
def test_cron_forms_kfp_accepts(given, six):
    assert six_fields(given) == six
    assert parse_schedule(given).converted == (given != six)


def test_next_fire_follows_crons_day_rule():
    after = datetime(2026, 12, 6, 12, 0, tzinfo=timezone.utc)  # a Sunday
    assert next_fire("0 0 2 * * *", after) == datetime(2026, 12, 7, 2, 0, tzinfo=timezone.utc)
    assert next_fire("0 0 9 * * MON-FRI", after) == datetime(2026, 12, 7, 9, 0, tzinfo=timezone.utc)
    assert next_fire("0 0 0 1 * 0", after) == datetime(2026, 12, 13, 0, 0, tzinfo=timezone.utc)  # day 1 OR Sunday
    assert next_fire("@every 90m", after) == datetime(2026, 12, 6, 13, 30, tzinfo=timezone.utc)


def test_the_test_server_refuses_what_the_apiserver_refuses(server):
    import kfp
    from kfp_server_api import (V2beta1CronSchedule, V2beta1RecurringRun, V2beta1Trigger)
    from kfp_server_api.exceptions import ApiException

    client = kfp.Client(host=server.url)
    for body, message in [
        (dict(max_concurrency="0", trigger=V2beta1Trigger(cron_schedule=V2beta1CronSchedule(cron="0 0 * * * *"))),
         "The max concurrency of the recurring run is out of range. Support 1-10. Received 0."),
        (dict(max_concurrency="1", trigger=V2beta1Trigger(cron_schedule=V2beta1CronSchedule(cron="every day"))),
         "Schedule cron is not a supported format"),
    ]:
        with pytest.raises(ApiException) as raised:
            client.recurring_runs.recurring_run_service_create_recurring_run(
                recurring_run=V2beta1RecurringRun(display_name="x", pipeline_spec={"pipelineInfo": {"name": "x"}},
                                                **body))
        assert message in raised.value.body
