"""%kale_run records every run and shows its progress; %kale_runs shows the recorded runs."""

from kale_magic.errors import KaleError
from kale_magic.history.views import RunComparison, RunsTable
from kale_magic.history.store import RunStore

CELLS = [
    "%%parameters\nscale = 1",
    "%%step make\ndata = list(range(5))",
    "%%step score\ntotal = sum(data) * scale",
    "%%metrics\ntotal",
]


def test_three_runs_recorded_and_shown_side_by_side(kernel, tmp_path, capsys):
    kernel.cells(*CELLS)
    runs = [kernel.run(f"%kale_run --experiment demo --param scale={s}") for s in (1, 3, 2)]
    assert [r.status for r in runs] == ["succeeded"] * 3
    printed = capsys.readouterr().out
    assert "✓ score succeeded" in printed and f"Run {runs[-1].id} succeeded" in printed

    table = kernel.run("%kale_runs --experiment demo --plot total")
    assert isinstance(table, RunsTable)
    assert list(table.frame.index) == [r.id.rsplit("-", 1)[1] for r in runs]  # short ids
    assert list(table.frame["total"]) == [10, 30, 20]
    assert f"best  total: {runs[1].id.rsplit('-', 1)[1]}" in repr(table)
    assert len(repr(table).splitlines()) == 1 + 3 + 2  # header, one line per run, best, the plot's line
    assert table._repr_html_().count("<circle") == 3

    assert len(kernel.run("%kale_runs --last 2").records) == 2
    record = RunStore.for_workspace(tmp_path).get(runs[0].id)
    assert record.experiment == "demo" and record.engine == "local" and record.parameters["scale"] == 1
    assert record.snapshot_id and any((tmp_path / ".kale").rglob(f"{record.snapshot_id}.json"))
    assert [(s.name, s.status) for s in record.steps] == [("make", "succeeded"), ("score", "succeeded")]
    assert all(s.code_hash and s.duration is not None for s in record.steps)


def test_compare_names_the_step_whose_code_changed(kernel):
    kernel.cells(*CELLS)
    first = kernel.run("%kale_run")
    kernel.run("%%step score\ntotal = sum(data) * scale + 1")
    second = kernel.run("%kale_run --param scale=2")
    comparison = kernel.run(f"%kale_runs --compare {first.id} {second.id}")
    assert isinstance(comparison, RunComparison)
    assert comparison.changed_steps == ["score"]
    assert ("scale", 1, 2, "changed") in comparison.parameters
    assert ("total", 10, 21, "+11") in comparison.metrics


def test_a_failed_run_is_recorded_with_its_error(kernel, tmp_path, capsys):
    (tmp_path / "input.txt").write_text("1")
    kernel.cells("%%step boom\nx = open('input.txt').read()", "%%step after\ny = x + '1'")
    (tmp_path / "input.txt").unlink()  # the step now fails in the pipeline
    run = kernel.error("%kale_run").run
    printed = capsys.readouterr().out
    record = RunStore.for_workspace(tmp_path).get(run.id)
    assert run.status == record.status == "failed"
    assert "FileNotFoundError" in record.error
    assert [(s.name, s.status) for s in record.steps] == [("boom", "failed"), ("after", "skipped")]
    assert "✗ boom failed" in printed


def test_unknown_run_id_is_one_sentence(kernel):
    kernel.cells(*CELLS)
    kernel.run("%kale_run")
    error = kernel.error("%kale_runs --compare nope nada")
    assert isinstance(error, KaleError) and "No run 'nope'" in str(error)


def test_kale_runs_shows_this_notebooks_pipeline_unless_all(kernel):
    kernel.cells(*CELLS)
    other = kernel.run("%kale_run --pipeline other")
    mine = [kernel.run(f"%kale_run --pipeline mine --param scale={s}") for s in (1, 2)]
    table = kernel.run("%kale_runs")
    assert [r.run_id for r in table.records] == [r.id for r in mine]
    assert [r.run_id for r in kernel.run("%kale_runs --all").records] == [other.id, *(r.id for r in mine)]
    short = [r.id.rsplit("-", 1)[1] for r in mine]
    comparison = kernel.run(f"%kale_runs --compare {short[0]} {short[1]}")  # the ids the table shows work
    assert ("scale", 1, 2, "changed") in comparison.parameters


def test_kale_cache_lists_what_it_holds(kernel, capsys):
    kernel.cells(*CELLS)
    run = kernel.run("%kale_run")
    capsys.readouterr()
    kernel.run("%kale_cache")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("2 cached step results in ")
    assert lines[1].split() == ["step", "age", "size", "produced", "by", "run"]
    rows = {line.split()[0]: line.split() for line in lines[2:4]}
    pipeline = run.plan.pipeline
    assert set(rows) == {f"{pipeline}/make", f"{pipeline}/score"}
    _, age, age_unit, size, size_unit, producer = rows[f"{pipeline}/make"]
    assert (age_unit, size_unit, producer) == ("s", "B", run.id)  # seconds old, bytes of `data`, this run
    assert int(age) >= 0 and int(size) > 0
    assert "--clear" in lines[-1]


def test_a_metrics_cell_shows_every_metric(kernel, capsys):
    kernel.cells("%%step s\naccuracy = 0.9\nloss = 0.25")
    capsys.readouterr()
    kernel.run("%%metrics\naccuracy\nloss")
    assert capsys.readouterr().out == "metrics: accuracy = 0.9, loss = 0.25\n"
