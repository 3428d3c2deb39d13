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
    assert list(table.frame.index) == [r.id for r in runs]
    assert list(table.frame["total"]) == [10, 30, 20]
    assert f"best  total: {runs[1].id}" in repr(table)
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
    run = kernel.run("%kale_run")
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
