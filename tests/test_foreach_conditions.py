"""``--if`` with ``--foreach``: the condition per item, the same in the kernel and on the local engine
(issue 24, points 1-3).  The lists after the loop hold the values of the items that ran, in item order."""

import pytest

from oracle import check, run_cells

MODELS = [
    "%%parameters\nmodels = ['tree', 'linear', 'svm', 'knn']\nleave_out = LEAVE_OUT\nthreshold = 0.4",
    "%%step split\ndata = list(range(10))",
    '%%step train --foreach m in models --if "m != leave_out"\nscore = round(len(m) / 10 + sum(data) / 1000, 3)\n'
    "name = m",
    '%%step check --foreach m in models --if "score > threshold"\ncalibrated = round(score * 2, 3)',
    "%%step summary\nbest = max(score)\nnames = list(name)\nn_calibrated = len(calibrated)",
]


def _cells(leave_out):
    return [cell.replace("LEAVE_OUT", repr(leave_out)) for cell in MODELS]


def test_a_false_item_is_skipped_with_its_continuation_and_the_lists_hold_the_items_that_ran(kernel, capsys):
    after = run_cells(kernel, _cells("linear"))
    said = capsys.readouterr().out.strip().splitlines()
    assert said == ["kale: step train[1] did not run: condition m != leave_out was false: m = 'linear', "
                    "leave_out = 'linear'",
                    "kale: step check[1] did not run: step 'train[1]' was skipped (condition m != leave_out was "
                    "false: m = 'linear', leave_out = 'linear')",
                    "kale: step check[2] did not run: condition score > threshold was false: score = 0.345, "
                    "threshold = 0.4",
                    "kale: step check[3] did not run: condition score > threshold was false: score = 0.345, "
                    "threshold = 0.4"]
    assert kernel.ns["name"] == ["tree", "svm", "knn"] and kernel.ns["score"] == [0.445, 0.345, 0.345]
    assert kernel.ns["calibrated"] == [0.89] and kernel.ns["n_calibrated"] == 1
    assert "m" not in kernel.ns

    run = kernel.kale_run()
    assert check(run, after) >= 5  # run.load of every value equals the kernel's
    steps = run.state.steps
    assert run.status == "succeeded" and steps["summary"].status == "succeeded"
    assert [i.status for i in steps["train"].items] == ["succeeded", "skipped", "succeeded", "succeeded"]
    assert steps["train"].items[1].message == "condition m != leave_out was false: m = 'linear', leave_out = 'linear'"
    assert steps["check"].items[1].message == ("skipped: step 'train[1]' was skipped (condition m != leave_out was "
                                               "false: m = 'linear', leave_out = 'linear')")
    assert [i.status for i in steps["check"].items] == ["succeeded", "skipped", "skipped", "skipped"]
    assert (steps["train"].status, steps["check"].status) == ("succeeded", "succeeded")
    assert run.load("name") == ["tree", "svm", "knn"] and run.load("calibrated") == [0.89]

    from kale_magic.panel.render import render_text

    assert "train ×4: 3 ✓ 1 – succeeded" in render_text(run.state)
    from kale_magic.history.store import RunStore
    from kale_magic.skips import skipped_by_condition

    with RunStore.for_workspace(".") as store:  # the run as a fresh reader of the store sees it
        recorded = {s.name: s for s in store.get(run.id).steps}
    assert [skipped_by_condition(i) for i in recorded["check"].items] == [False, True, True, True]
    assert recorded["check"].items[1].message == steps["check"].items[1].message


def test_the_other_branch_every_item_runs_and_a_second_run_reuses_them(kernel):
    after = run_cells(kernel, _cells("none"))
    assert kernel.ns["name"] == ["tree", "linear", "svm", "knn"] and kernel.ns["calibrated"] == [0.89, 1.29]
    run = kernel.kale_run()
    assert check(run, after) >= 5
    assert [i.status for i in run.state.steps["train"].items] == ["succeeded"] * 4
    assert [i.status for i in run.state.steps["check"].items] == ["succeeded"] * 2 + ["skipped"] * 2
    again = kernel.kale_run()  # the gates read cached values; the fan-in's key covers the items that ran
    assert [i.status for i in again.state.steps["check"].items] == ["cached"] * 2 + ["skipped"] * 2
    assert again.state.steps["summary"].status == "cached" and check(again, after) >= 5
    shifted = kernel.kale_run("--param threshold=0.5")  # check drops another item: summary's lists change
    assert [i.status for i in shifted.state.steps["check"].items] == ["skipped", "cached", "skipped", "skipped"]
    assert shifted.state.steps["summary"].status == "succeeded" and shifted.load("calibrated") == [1.29]


def test_every_item_skipped_leaves_empty_lists_and_an_unknown_name_is_refused(kernel):
    from kale_magic.errors import ValidationError

    after = run_cells(kernel, ["%%parameters\nxs = [1, 2, 3]",
                               '%%step keep --foreach x in xs --if "x % 2"\ny = x * 10',
                               '%%step none --foreach x in xs --if "x > 5"\nw = x',
                               "%%step join\ntotal = sum(y) + len(w)"])
    assert kernel.ns["y"] == [10, 30] and kernel.ns["w"] == [] and kernel.ns["total"] == 40
    assert kernel.magics.plan().steps["keep"].condition_inputs == ()  # the item is no value of another step
    run = kernel.kale_run()  # every item of 'none' skipped: the step is skipped, its list is empty, join runs
    assert check(run, after) >= 3 and run.state.steps["none"].status == "skipped"
    assert run.state.steps["join"].status == "succeeded"

    kernel.ns["limit"] = 2  # in the kernel, but from no step
    kernel.run('%%step more --foreach x in xs --if "x < limit"\nz = x')
    with pytest.raises(ValidationError) as refused:
        kernel.magics.plan()
    assert [p for p in refused.value.problems if "limit" in p][0].startswith(
        "step 'more' --if \"x < limit\" reads 'limit'")


def test_kfp_refuses_a_conditional_loop_in_one_sentence(kernel, tmp_path):
    from kale_magic.engines.kfp.compiler import compile_pipeline
    from kale_magic.errors import KaleError

    kernel.cells("%%parameters\nxs = [1, 2]", '%%step sq --foreach x in xs --if "x > 1"\nacc = x * x')
    with pytest.raises(KaleError) as refused:
        compile_pipeline(kernel.magics.plan(), tmp_path / "p.yaml")
    assert str(refused.value) == ("step 'sq' uses --if with --foreach, which kale-magic does not compile for Kubeflow "
                                  "Pipelines; run it with --engine local, or test the condition inside the cell.")


def test_kale_magic_run_headless_runs_a_conditional_loop_with_the_kernels_values(kernel, tmp_path):
    """``kale-magic run`` plans the notebook from its file (no kernel) and gives every value the kernel gives."""
    from cli_helpers import code, kale_magic, write
    from kale_magic import marshal
    from oracle import values_equal

    cells = _cells("linear")
    after = run_cells(kernel, cells)
    write(tmp_path / "loop.ipynb", code("%load_ext kale_magic"), *[code(c) for c in cells], code("%kale_run"))
    result = kale_magic("run", "loop.ipynb", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert any("train ×4: 3 ✓ 1 –" in line for line in result.stdout.splitlines()), result.stdout
    (run_dir,) = (tmp_path / ".kale" / "runs").iterdir()
    plan = kernel.magics.plan()
    checked = 0
    flowing = {(t.producer, t.name): t for step in plan.steps.values() for t in step.inputs + step.condition_inputs}
    for transfer in flowing.values():  # every value a step or a gate loads
        producer = transfer.producer
        if plan.steps[producer].foreach:  # the items that ran, in item order
            saved = sorted((run_dir / "data").glob(f"{producer}[[]*]/{transfer.name}"),
                           key=lambda p: int(p.parent.name[len(producer) + 1:-1]))
            loaded = [marshal.load(str(p), name=transfer.name, step=producer) for p in saved]
        else:
            loaded = marshal.load(str(run_dir / "data" / producer / transfer.name), name=transfer.name, step=producer)
        assert values_equal(loaded, after[producer][transfer.name]), (transfer, loaded)
        checked += 1
    assert checked == 4  # data, score (also read by the gate of check), name, calibrated


def test_only_a_condition_s_skip_leaves_an_item_out_of_the_lists_as_the_store_restores_it(tmp_path):
    """The kind of a skip, not its words, says whether a condition made it: an item skipped by a failure whose
    message starts with "condition " is no condition's skip, in the run state and in a fresh store's record."""
    from kale_magic.history.store import RunStore
    from kale_magic.run.state import RunState
    from kale_magic.skips import skipped_by_condition

    state = RunState("r-1", "p", "e", "local", ["t", "u"])
    state.fan_out("t", 3)
    state.item("t", 0, "succeeded")
    state.item("t", 1, "skipped", message="condition x > 1 was false: x = 0", skip="condition")
    state.item("t", 2, "skipped", message="condition x > 1 could not load 'x': its step failed", skip="failure")
    state.step("u", "skipped", message="skipped: step 'g' was skipped (condition a > b was false)", skip="condition")
    state.finish("failed", "t[2] was skipped")
    assert [skipped_by_condition(i) for i in state.steps["t"].items] == [False, True, False]
    assert state.steps["t"].status == "skipped" and state.steps["t"].skip == "failure"  # item 1 leaves no gap
    with RunStore(tmp_path / "runs.db") as store:
        store.save(store.recorder().record(state.snapshot()))  # what the recorder's writer thread writes
    with RunStore(tmp_path / "runs.db") as fresh:
        steps = {s.name: s for s in fresh.get("r-1").steps}
    assert [(i.name, i.status, i.skip) for i in steps["t"].items] == [
        ("t[0]", "succeeded", ""), ("t[1]", "skipped", "condition"), ("t[2]", "skipped", "failure")]
    assert [skipped_by_condition(i) for i in steps["t"].items] == [False, True, False]
    assert skipped_by_condition(steps["u"]) and steps["u"].items is None


def test_rows_an_older_store_wrote_get_their_skips_kind_from_their_words(tmp_path):
    """A store of schema 5 (no kinds): opening it classifies each skipped row once, by what the engines said."""
    import sqlite3

    from kale_magic.history.store import MIGRATIONS, RunStore
    from kale_magic.skips import skipped_by_condition

    path = tmp_path / "runs.db"
    with sqlite3.connect(path) as old:
        for migration in MIGRATIONS[:5]:
            old.executescript(migration)
        old.execute("PRAGMA user_version = 5")
        old.execute("INSERT INTO runs (run_id, experiment, pipeline, engine, status, started) "
                    "VALUES ('old', 'e', 'p', 'local', 'succeeded', 1.0)")
        rows = {"own": "condition x > 1 was false: x = 0",
                "below": "skipped: step 'gate' was skipped (condition a > b was false: a = 1, b = 2)",
                "failed": "skipped: upstream step 'x' failed",
                "items": "t[1]: skipped: upstream step 't[1]' failed",
                "cancel": "skipped: the run was cancelled",
                "left": "not run (not selected: --only a)",
                "kfp": "skipped: the condition a > b of step 'g' was false (the kale-gate task's output says why)"}
        old.executemany("INSERT INTO steps (run_id, name, position, status, message) VALUES ('old', ?, ?, 'skipped', ?)",
                        [(name, i, message) for i, (name, message) in enumerate(rows.items())])
    with RunStore(path) as store:
        steps = {s.name: s for s in store.get("old").steps}
    assert {name: s.skip for name, s in steps.items()} == {
        "own": "condition", "below": "condition", "failed": "failure", "items": "failure", "cancel": "cancel",
        "left": "not-selected", "kfp": "condition"}
    assert [name for name, s in steps.items() if skipped_by_condition(s)] == ["own", "below", "kfp"]


def test_the_edge_into_a_gated_step_names_the_values_its_condition_reads(kernel):
    """Nothing but the gate loads ``accuracy``: the edge still carries it (once '(order only)')."""
    from kale_magic.panel.graph import graph_svg
    from kale_magic.plan.report import plan_text

    kernel.cells("%%parameters\nthreshold = 0.5", "%%step summary\naccuracy = 0.8",
                 '%%step deploy --if "accuracy > threshold"\npath = "model.pkl"')
    plan = kernel.magics.plan()
    assert plan.flows() == [("summary", "deploy", ("accuracy",))]
    assert "  summary -> deploy: accuracy [if accuracy > threshold]" in plan_text(plan)
    svg = graph_svg(plan)
    assert ">accuracy<" in svg and 'data-condition="accuracy &gt; threshold"' in svg


def test_kale_debug_of_the_fan_in_loads_the_lists_of_the_items_that_ran(kernel):
    after = run_cells(kernel, _cells("linear"))
    run = kernel.kale_run()
    kernel.ns.update(score=None, name=None, calibrated=None)
    kernel.run(f"%kale_debug summary --run {run.id}")
    assert kernel.ns["score"] == after["train"]["score"] == [0.445, 0.345, 0.345]
    assert kernel.ns["name"] == ["tree", "svm", "knn"] and kernel.ns["calibrated"] == [0.89]
