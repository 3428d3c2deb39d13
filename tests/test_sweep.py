"""%kale_run --sweep: a run per point of the grid, grouped under one sweep id; shared steps run once."""

import pytest

from kale_magic.errors import KaleError, ValidationError
from kale_magic.history.store import RunStore
from kale_magic.run.grid import GRID_MAX, parse_grid
from kale_magic.run.sweep import Sweep

CELLS = [
    "%%parameters\nlr = 0.1\ndepth = 3\nname = 'base'",
    "%%step prep\ndata = [i * i for i in range(10)]",
    "%%step train\nscore = round(sum(data) * lr + depth, 6)",
    "%%metrics\nscore",
]


def score(lr, depth):
    return round(sum(i * i for i in range(10)) * lr + depth, 6)


def test_every_point_is_a_run_and_the_shared_step_runs_once(kernel, tmp_path, capsys):
    kernel.cells(*CELLS)
    sweep = kernel.run("%kale_run --experiment tune --sweep lr=0.1,0.01 --sweep depth=3,5")
    assert isinstance(sweep, Sweep) and sweep.status == "succeeded"
    points = [(0.1, 3), (0.1, 5), (0.01, 3), (0.01, 5)]
    assert [(r.state.parameters["lr"], r.state.parameters["depth"]) for r in sweep.runs] == points
    assert [r.metrics["score"] for r in sweep.runs] == [score(lr, d) for lr, d in points]  # the kernel's formula
    assert [r.load("score") for r in sweep.runs] == [score(lr, d) for lr, d in points]
    assert sweep.shared == ("prep",)
    first = sweep.runs[0]
    assert first.steps["prep"].status == "succeeded"
    assert [(r.steps["prep"].status, r.steps["prep"].cached_from) for r in sweep.runs[1:]] == [("cached", first.id)] * 3
    assert all(r.steps["train"].status == "succeeded" for r in sweep.runs)

    table = sweep.table()
    assert list(table["lr"]) == [0.1, 0.1, 0.01, 0.01] and list(table["status"]) == ["succeeded"] * 4
    assert list(table["score"]) == [score(lr, d) for lr, d in points]
    assert sweep.best("score") is sweep.runs[1] and sweep.best("score", mode="min") is sweep.runs[2]
    with pytest.raises(KaleError, match="no point of sweep .* numeric metric 'accuracy'"):
        sweep.best("accuracy")

    with RunStore.for_workspace(tmp_path) as store:
        records = store.runs(sweep=sweep.id)
        assert [r.run_id for r in records] == [r.id for r in sweep.runs]
        assert {r.sweep_id for r in records} == {sweep.id} and {r.experiment for r in records} == {"tune"}
        assert store.runs(sweep=sweep.id.rsplit("-", 1)[-1])[0].run_id == first.id  # the short id works too
    printed = capsys.readouterr().out
    assert f"sweep {sweep.id}: shared step prep succeeded (once for all points)" in printed
    assert printed.count(f"sweep {sweep.id}: point ") == 4


def test_kale_runs_shows_a_sweep_and_plots_a_metric_by_a_parameter(kernel):
    kernel.cells(*CELLS)
    kernel.run("%kale_run --experiment tune --param depth=1")  # not part of the sweep
    sweep = kernel.run("%kale_run --experiment tune --sweep lr=0.1,0.2,0.3 --sweep depth=3,5")
    table = kernel.run(f"%kale_runs --sweep {sweep.id} --plot score --by lr")
    assert [r.run_id for r in table.records] == [r.id for r in sweep.runs]
    assert set(table.frame["sweep"]) == {sweep.id.rsplit("-", 1)[-1]}
    text = repr(table)
    assert f"score by lr (depth=3): 0.1 -> {score(0.1, 3):g}, 0.2 -> {score(0.2, 3):g}, 0.3 -> {score(0.3, 3):g}" in text
    assert "score by lr (depth=5): " in text
    assert table._repr_html_().count("<polyline") == 2  # one line per value of the other parameter
    assert table._repr_html_().count("<circle") == 6
    with pytest.raises(KaleError, match="--by lr says what to plot a metric against; add --plot METRIC"):
        kernel.run(f"%kale_runs --sweep {sweep.id} --by lr")
    with pytest.raises(KaleError, match="No sweep 'nope'"):
        kernel.run("%kale_runs --sweep nope")


def test_no_cache_still_runs_the_shared_step_once(kernel):
    kernel.cells(*CELLS)
    kernel.run("%kale_run")  # a cached prep from before the sweep, which --no-cache must not reuse
    sweep = kernel.run("%kale_run --no-cache --sweep depth=1,2,3")
    first = sweep.runs[0]
    assert first.steps["prep"].status == "succeeded"
    assert [r.steps["prep"].cached_from for r in sweep.runs[1:]] == [first.id] * 2
    assert all(r.steps["train"].status == "succeeded" for r in sweep.runs)


def test_list_literals_and_text_parameters(kernel):
    kernel.cells(*CELLS, "%%step tag\nlabel = f'{name}-{depth}'")
    sweep = kernel.run('%kale_run --sweep "name=[\'a,b\', \'c\']" --sweep "lr=[0.5]"')
    assert [r.load("label") for r in sweep.runs] == ["a,b-3", "c-3"]
    assert [r.state.parameters["lr"] for r in sweep.runs] == [0.5, 0.5]
    assert sweep.shared == ("prep",)  # train reads lr, tag reads name


def test_sweep_problems_are_named_all_at_once(kernel):
    kernel.cells(*CELLS)
    error = kernel.error('%kale_run --sweep nope=1 --sweep depth=3.5,4 --sweep "lr=[]"')
    assert isinstance(error, ValidationError)
    assert error.problems == [
        "--sweep nope: there is no parameter 'nope' in the %%parameters cells (known: lr, depth, name); "
        "sweep a parameter.",
        "--sweep depth: 3.5 is not a whole number like the parameter's default 3; give whole numbers.",
        "--sweep lr: the grid is empty (no values given); list one or more, e.g. --sweep lr=1,2.",
    ]
    values = ",".join(str(v) for v in range(20))
    error = kernel.error(f"%kale_run --sweep depth={values} --sweep lr={values}")
    assert error.problems == [f"--sweep: the grid has 400 points (20 depth × 20 lr), more than the {GRID_MAX} one "
                              "sweep may run; sweep fewer values, or split it into several sweeps."]
    assert "--sweep runs every point of its grid now; leave out --compile-only." in str(
        kernel.error("%kale_run --compile-only --sweep depth=1,2"))
    with RunStore.for_workspace(".") as store:
        assert store.runs() == []  # nothing ran


@pytest.mark.parametrize("options, problem", [
    (["depth=1,2", "depth=3"], "--sweep depth is given twice; list all its values in one --sweep."),
    (["depth"], "--sweep 'depth': write it as NAME=V1,V2,... or \"NAME=[V1, V2]\", e.g. --sweep lr=0.1,0.01."),
    (["flag=1"], "--sweep flag: 1 is not True or False like the parameter's default False; give True or False."),
    (["lr=0.1,fast"], "--sweep lr: 'fast' is not a finite number like the parameter's default 0.1; give finite "
                      "numbers."),
    (["lr=[0.1, 1e999]"], "--sweep lr: inf is not a finite number like the parameter's default 0.1; give finite "
                          "numbers."),
    (["tags=[[1], (2,)]"], "--sweep tags: (2,) is not a list like the parameter's default [0]; give list literals."),
    (["lr=[1"], "--sweep lr=[1: not a Python list of literals; write e.g. \"lr=[0.1, 0.01]\"."),
])
def test_grid_refusals(options, problem):
    with pytest.raises(ValidationError) as caught:
        parse_grid(options, {"lr": 0.1, "depth": 3, "flag": False, "tags": [0]})
    assert caught.value.problems == [problem]


def test_grid_order_and_types():
    grid = parse_grid(["lr=1,0.5", "flag=True,False", "tags=[[1], [2, 3]]"],
                      {"lr": 0.1, "flag": False, "tags": [0]})
    assert grid.names == ("lr", "flag", "tags")
    assert grid.points[:3] == ({"lr": 1, "flag": True, "tags": [1]}, {"lr": 1, "flag": True, "tags": [2, 3]},
                               {"lr": 1, "flag": False, "tags": [1]})
    assert len(grid.points) == 8
    assert parse_grid(["depth=3,3,4"], {"depth": 1}).points == ({"depth": 3}, {"depth": 4})  # repeats once


@pytest.mark.slow  # kale-magic run in a subprocess
def test_kale_magic_run_sweeps_headless_and_computes_the_shared_step_once(tmp_path):
    from cli_helpers import code, kale_magic, write

    log = tmp_path.parent / f"{tmp_path.name}-executions.log"  # a side channel outside the workspace
    mark = f"open({str(log)!r}, 'a').write('{{}}\\n')"
    write(tmp_path / "nb.ipynb", code("%load_ext kale_magic"),
          code("%%parameters\nlr = 0.1\ndepth = 3"),
          code("%%step prep\n" + mark.format("prep") + "\ndata = list(range(10))"),
          code("%%step train\n" + mark.format("train") + "\nscore = sum(data) * lr + depth"),
          code("%%metrics\nscore"),
          code("%kale_run --experiment tune"))
    result = kale_magic("run", "nb.ipynb", "--sweep", "lr=1,2,3", "--sweep", "depth=0,10", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(log.read_text().split()) == ["prep"] + ["train"] * 6  # prep once for the six points
    shown = kale_magic("runs", "--experiment", "tune", "--plot", "score", "--by", "lr", cwd=tmp_path)
    assert "score by lr (depth=0): 1 -> 45, 2 -> 90, 3 -> 135" in shown.stdout
    assert "score by lr (depth=10): 1 -> 55, 2 -> 100, 3 -> 145" in shown.stdout
    with RunStore.for_workspace(tmp_path) as store:
        records = store.runs(experiment="tune")
    assert len(records) == 6 and len({r.sweep_id for r in records}) == 1
    assert [(r.parameters["lr"], r.parameters["depth"], r.metrics["score"]) for r in records] == [
        (lr, d, sum(range(10)) * lr + d) for lr in (1, 2, 3) for d in (0, 10)]
    refused = kale_magic("run", "nb.ipynb", "--sweep", "depht=1,2", cwd=tmp_path)
    assert refused.returncode == 1
    assert "--sweep depht: there is no parameter 'depht' in the %%parameters cells (known: lr, depth)" in refused.stderr


def test_a_failed_point_fails_the_sweep_and_the_others_still_run(kernel):
    from kale_magic.errors import RunFailed

    kernel.cells(*CELLS[:2], "%%step train\nassert depth != 5, 'depth 5 diverged'\nscore = depth", "%%metrics\nscore")
    failure = kernel.error("%kale_run --sweep depth=3,5,7")
    assert isinstance(failure, RunFailed) and "depth 5 diverged" in str(failure)
    sweep = kernel.magics.last_run
    assert sweep.status == "failed"
    assert [p.status for p in sweep.points] == ["succeeded", "failed", "succeeded"]
    assert [r.metrics.get("score") for r in sweep.runs] == [3, None, 7]
    assert sweep.best("score", mode="min") is sweep.runs[0]
    kernel.run("%kale_debug train --failed")  # the latest sweep's pipeline is the notebook's
    assert kernel.ns["depth"] == 5


def test_a_shared_step_that_fails_starts_no_other_point(kernel, tmp_path):
    kernel.run("%config Kale.stop_on_failure = False")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.csv").write_text("1\n")
    kernel.cells("%%parameters\ndepth = 3", "%%step prep\nimport os\nrows = len(os.listdir('data'))",
                 "%%step train\nscore = rows * depth")
    (tmp_path / "data" / "a.csv").unlink()
    (tmp_path / "data").rmdir()  # the kernel's cell saw the folder; the pipeline's prep now fails
    sweep = kernel.run("%kale_run --sweep depth=1,2,3")
    assert sweep.status == "failed"
    assert sweep.runs[0].steps["prep"].status == "failed" and len(sweep.runs) == 1
    assert [p.status for p in sweep.points[1:]] == ["not started"] * 2
    assert sweep.points[1].note == "not started: shared step 'prep' failed in the first point"
    assert "not started: shared step 'prep' failed in the first point" in repr(sweep)


def test_the_sweep_panel_shows_the_shared_steps_once_and_a_row_per_point(kernel):
    from kale_magic.panel.sweep import sweep_html, sweep_text

    kernel.cells(*CELLS)
    sweep = kernel.run("%kale_run --sweep lr=0.5,0.25 --sweep depth=1,2")
    html, text = sweep_html(sweep), sweep_text(sweep)
    assert html.count("<tr>") == 1 + 4 and html.count(">prep<") + html.count("prep</span>") == 1
    assert text.splitlines()[1] == "  shared steps (once, in point 1): ✓ prep succeeded"
    rows = text.splitlines()[2:]
    assert len(rows) == 4 and all("✓ succeeded" in row and "1/1 steps" in row for row in rows)
    assert f"score={score(0.25, 2)!r}" in rows[3] and rows[3].lstrip().startswith("4. lr=0.25 depth=2")


def test_max_parallel_bounds_the_points_running_at_once(kernel):
    kernel.run("%config Kale.max_parallel = 1")
    kernel.cells(*CELLS)
    sweep = kernel.run("%kale_run --sweep depth=1,2,3")
    runs = sweep.runs
    assert [r.status for r in runs] == ["succeeded"] * 3
    assert all(later.state.started >= earlier.state.ended for earlier, later in zip(runs, runs[1:]))


def test_background_returns_the_sweep_to_wait_on(kernel):
    kernel.cells(*CELLS)
    sweep = kernel.run("%kale_run --background --sweep depth=1,2")
    assert sweep.wait() is sweep and sweep.status == "succeeded"
    assert [r.metrics["score"] for r in sweep.runs] == [score(0.1, 1), score(0.1, 2)]


@pytest.mark.slow  # a Jupyter kernel
def test_execute_notebook_sweeps_with_the_kernels_values(tmp_path):
    from cli_helpers import code, kale_magic, write

    write(tmp_path / "nb.ipynb", code("%load_ext kale_magic"), code("%%parameters\nlr = 0.1\ndepth = 3"),
          code("%%step prep\ndata = list(range(10))"), code("%%step train\nscore = sum(data) * lr + depth"),
          code("%%metrics\nscore"), code("sweep = %kale_run --experiment tune"),
          code("print('best depth:', sweep.best('score').state.parameters['depth'])"))
    result = kale_magic("run", "nb.ipynb", "--execute-notebook", "--sweep", "depth=1,4,2", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[cell 7] best depth: 4" in result.stdout.splitlines()
    with RunStore.for_workspace(tmp_path) as store:
        records = store.runs(experiment="tune")
    assert [(r.parameters["depth"], r.metrics["score"], r.status) for r in records] == [
        (d, 45 * 0.1 + d, "succeeded") for d in (1, 4, 2)]
    assert len({r.sweep_id for r in records}) == 1


def test_no_cache_points_resume_the_first_even_when_its_store_writes_lag(kernel, monkeypatch):
    """The other points resume from the first through the run store; a writer lagging behind the run's
    state on a busy machine (here: every write after the first point's start held back) must not make
    them run the shared step again."""
    import threading

    from kale_magic.history import store as history

    save, held = history.RunStore.save, threading.Event()

    def lagging(self, record, **kwargs):
        if record.steps and any(s.name == "prep" and s.status == "succeeded" for s in record.steps):
            held.wait(2.0)  # a write of prep's success waits until a second point started (or 2 s)
        return save(self, record, **kwargs)

    monkeypatch.setattr(history.RunStore, "save", lagging)
    monkeypatch.setattr(history.Recorder, "WAIT", 0.0)
    kernel.cells(*CELLS)
    from kale_magic.run import sweep as sweeps

    launch = sweeps._launch

    def launched(sweep, point, start, slots):
        started = launch(sweep, point, start, slots)
        if point is not sweep.points[0]:
            held.set()
        return started

    monkeypatch.setattr(sweeps, "_launch", launched)
    sweep = kernel.run("%kale_run --no-cache --sweep depth=1,2")
    first = sweep.runs[0]
    assert first.steps["prep"].status == "succeeded"
    assert [r.steps["prep"].cached_from for r in sweep.runs[1:]] == [first.id]
