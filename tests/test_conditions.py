"""``%%step NAME --if "EXPR"``: checked on its AST, the same truth in the kernel and on the local engine."""

from dataclasses import replace

import pytest

from kale_magic.engines.local.scheduler import Schedule, StepInstance
from kale_magic.errors import ValidationError
from kale_magic.plan.condition import parse_condition
from oracle import run_cells, values_equal


@pytest.mark.parametrize("text, names", [
    ("accuracy > threshold", ("accuracy", "threshold")),
    ("len(folds) >= 2 and not dry_run", ("folds", "dry_run")),
    ("abs(a - b) < 0.1 or max(scores) > round(best, 2)", ("a", "b", "scores", "best")),
    ("report['auc'] >= 0.9 and model.fitted", ("report", "model")),
    ("any([x > 1, y in (1, 2)]) and all(flags[:2])", ("x", "y", "flags")),
    ("mode == 'prod'", ("mode",)),
])
def test_an_allowed_condition_names_what_it_reads_in_order(text, names):
    assert parse_condition(text).names == names


@pytest.mark.parametrize("text, said", [
    ("np.mean(scores) > 0.9", "it calls np.mean(), but a condition may call only len, abs, min, max, any, all, round"),
    ("deploy_ok()", "it calls deploy_ok()"),
    ("round(x, ndigits=2) > 1", "it passes round() a keyword argument"),
    ("model.__class__", "it reads the private attribute .__class__"),
    ("[s for s in scores]", "a comprehension is not allowed"),
    ("(n := 3) > 2", "an assignment (:=) is not allowed"),
    ("lambda: 1", "a lambda is not allowed"),
    ("accuracy >", "it is not a Python expression"),
])
def test_anything_else_is_refused_in_one_sentence(text, said):
    with pytest.raises(ValueError) as refused:
        parse_condition(text)
    assert str(refused.value).startswith(said) and "\n" not in str(refused.value)


def test_a_condition_calls_only_its_builtins_even_when_values_shadow_them():
    condition = parse_condition("len(x) > 1")
    assert condition.holds({"x": [1, 2]}) and not condition.holds({"x": [1]})
    assert parse_condition("accuracy > threshold").why_false({"accuracy": 0.87, "threshold": 0.9}) == (
        "condition accuracy > threshold was false: accuracy = 0.87, threshold = 0.9")


def test_a_skipped_instance_skips_its_descendants_with_the_reason_and_nothing_fails():
    schedule = Schedule({"train": (), "deploy": ("train",), "notify": ("deploy",), "report": ("train",)})
    schedule.end(StepInstance("train"), "succeeded")
    skipped = schedule.end(StepInstance("deploy"), "skipped", "condition a > b was false: a = 1, b = 2")
    assert {str(i): tuple(why) for i, why in skipped.items()} == {
        "notify": ("condition", "skipped: step 'deploy' was skipped (condition a > b was false: a = 1, b = 2)")}
    assert [str(i) for i in schedule.ready()] == ["report"] and schedule.failed == []


GATED = [
    "%%parameters\nthreshold = THRESHOLD",
    "%%step train\nscores = [0.85, 0.89]\nmodel = {'kind': 'tree'}",
    "%%step summary\naccuracy = sum(scores) / len(scores)",
    '%%step deploy --if "accuracy > threshold"\npath = f"models/{model[\'kind\']}.pkl"',
    "%%step notify\nmessage = 'deployed to ' + path",
    "%%step report --after summary\nline = f'accuracy {accuracy:.2f}'",
]


def _cells(threshold):
    return [cell.replace("THRESHOLD", repr(threshold)) for cell in GATED]


def test_a_true_condition_runs_the_branch_in_the_kernel_and_the_run_alike(kernel):
    after = run_cells(kernel, _cells(0.5))
    assert kernel.ns["message"] == "deployed to models/tree.pkl"
    run = kernel.kale_run()
    assert run.status == "succeeded" and {n: s.status for n, s in run.state.steps.items()} == {
        "train": "succeeded", "summary": "succeeded", "deploy": "succeeded", "notify": "succeeded",
        "report": "succeeded"}
    for transfer in run.plan.transfers():
        assert values_equal(run.load(transfer.name, step=transfer.producer),
                            after[transfer.producer][transfer.name]), transfer


def test_a_false_condition_skips_the_branch_in_the_kernel_and_the_run_alike(kernel, capsys):
    cells = _cells(0.9)
    after = run_cells(kernel, cells[:4])
    assert capsys.readouterr().out.strip().splitlines()[-1] == (
        "kale: step deploy did not run: condition accuracy > threshold was false: accuracy = 0.87, threshold = 0.9")
    assert "path" not in kernel.ns
    kernel.run(cells[4], cell_id="cell-4")  # after deploy: held back too, as in the pipeline ("Run All" goes on)
    assert capsys.readouterr().out.strip() == (
        "kale: step notify did not run: step 'deploy' before it did not run (condition accuracy > threshold was "
        "false: accuracy = 0.87, threshold = 0.9)")
    assert "message" not in kernel.ns
    kernel.run(cells[5], cell_id="cell-5")  # --after summary: runs
    after["report"] = {"line": kernel.ns["line"]}
    run = kernel.kale_run()
    why = "condition accuracy > threshold was false: accuracy = 0.87, threshold = 0.9"
    steps = run.state.steps
    assert run.status == "succeeded"
    assert (steps["deploy"].status, steps["deploy"].message) == ("skipped", why)
    assert (steps["notify"].status, steps["notify"].message) == (
        "skipped", f"skipped: step 'deploy' was skipped ({why})")
    assert steps["report"].status == "succeeded"
    assert (steps["deploy"].skip, steps["notify"].skip) == ("condition", "condition")
    assert run.state.tasks["Run"].message.endswith("steps succeeded; 2 skipped by a condition")  # not "not selected"
    checked = 0
    for transfer in run.plan.transfers():
        if transfer.producer in ("deploy", "notify"):
            continue
        assert values_equal(run.load(transfer.name, step=transfer.producer), after[transfer.producer][transfer.name])
        checked += 1
    assert checked >= 3  # scores, model, accuracy
    with pytest.raises(Exception, match="it was skipped"):
        run.load("path", step="deploy")


def test_the_condition_reads_values_of_ancestors_without_becoming_inputs_of_the_step(kernel):
    run_cells(kernel, _cells(0.5))
    deploy = kernel.magics.plan().steps["deploy"]
    assert deploy.condition_parameters == ("threshold",)
    assert [(t.name, t.producer) for t in deploy.condition_inputs] == [("accuracy", "summary")]
    assert "accuracy" not in [t.name for t in deploy.inputs]


def test_a_condition_that_cannot_run_is_refused_when_the_cell_runs(kernel):
    error = kernel.error('%%step deploy --if "np.mean(scores) > 0.9"\npath = 1')
    assert str(error) == ('%%step deploy: --if "np.mean(scores) > 0.9": it calls np.mean(), but a condition may call '
                          "only len, abs, min, max, any, all, round; compute the value in a step before and test that.")
    error = kernel.error('%%step deploy --if "accuracy > 0.9"\npath = 1')
    assert "'accuracy' is not defined in the kernel" in str(error)
    kernel.ns["accuracy"] = 0.87
    error = kernel.error('%%step deploy --if "len(accuracy) > 0"\npath = 1')
    assert str(error) == ('%%step deploy: --if "len(accuracy) > 0" could not be evaluated: TypeError: '
                          "object of type 'float' has no len().")
    assert "path" not in kernel.ns


def test_unknown_names_in_conditions_are_all_named_at_once(kernel):
    kernel.cells("%%step train\nscore = 0.9",
                 "%%step late\nlater = 1")
    kernel.ns["acuracy"] = 1.0  # a typo the kernel happens to hold
    kernel.ns["later"] = 1
    kernel.cells('%%step deploy --if "acuracy > 0.5" --after train\npath = 1',
                 '%%step notify --if "later == 1" --after train\nsent = True')
    with pytest.raises(ValidationError) as refused:
        kernel.magics.plan()
    problems = refused.value.problems
    assert len(problems) == 2
    assert problems[0].startswith("step 'deploy' --if \"acuracy > 0.5\" reads 'acuracy', but it is defined in a cell "
                                  "that is not annotated")
    assert problems[1] == ("step 'notify' --if \"later == 1\" reads 'later', but it is produced by step 'late', which "
                           "does not run before 'notify'; add --after late to the %%step notify line.")


def test_show_and_the_graph_label_the_condition_and_grey_the_skipped_branch_with_its_reason(kernel, capsys):
    import xml.etree.ElementTree as ET

    from kale_magic.panel.graph import graph_svg
    from kale_magic.plan.report import plan_text
    from kale_magic.run.state import StepState

    run_cells(kernel, _cells(0.5))
    plan = kernel.magics.plan()
    text = plan_text(plan)
    assert "  deploy (after summary); parameters: threshold; runs only if accuracy > threshold" not in text
    assert "  deploy (after summary); runs only if accuracy > threshold" in text
    assert "  summary -> deploy: accuracy [if accuracy > threshold]" in text
    kernel.run("%kale_show")
    assert "summary -> deploy: accuracy [if accuracy > threshold]" in capsys.readouterr().out

    why = "condition accuracy > threshold was false: accuracy = 0.87, threshold = 0.9"
    states = {"deploy": StepState("deploy", "skipped", message=why),
              "notify": StepState("notify", "skipped", message=f"skipped: step 'deploy' was skipped ({why})")}
    svg = ET.fromstring(graph_svg(plan, states))
    ns = {"s": "http://www.w3.org/2000/svg"}
    edges = {(e.get("data-from"), e.get("data-to")): e for e in svg.iterfind(".//s:g[@class='kale-edge']", ns)}
    labelled = edges[("summary", "deploy")]
    assert labelled.get("data-condition") == "accuracy > threshold"
    assert labelled.find("s:title", ns).text == "deploy runs only if accuracy > threshold"
    assert edges[("train", "summary")].get("data-condition") is None
    nodes = {n.get("data-step"): n for n in svg.iterfind(".//s:g[@class='kale-node']", ns)}
    deploy = nodes["deploy"]
    assert deploy.get("data-status") == "skipped"
    assert deploy.find("s:rect", ns).get("stroke-dasharray") == "4 3"  # greyed, dashed
    assert deploy.find("s:text[@class='kale-node-condition']", ns).text == "if accuracy > threshold"
    assert why in deploy.find("s:title", ns).text
    assert nodes["notify"].get("data-status") == "skipped" and why in nodes["notify"].find("s:title", ns).text


def test_a_cached_producer_still_gates_and_a_condition_that_raises_fails_its_step(kernel):
    run_cells(kernel, _cells(0.9))
    first = kernel.kale_run()
    second = kernel.kale_run()  # train and summary come from the cache: the gate reads the reused accuracy
    assert second.state.steps["summary"].status == "cached"
    assert second.status == "succeeded" and second.state.steps["deploy"].status == "skipped"
    assert second.state.steps["deploy"].message == first.state.steps["deploy"].message

    # A value the run computes differently from the kernel (randomness, files): an error fails the step.
    session = kernel.magics.session
    cell = session.cells["id:cell-3"]
    session.cells[cell.key] = replace(cell, options=replace(cell.options, condition="len(accuracy) > 0"))
    run = kernel.kale_run()
    assert run.status == "failed"
    assert run.state.steps["deploy"].status == "failed"
    assert run.state.steps["deploy"].message == (
        "the --if \"len(accuracy) > 0\" of step 'deploy' raised TypeError: object of type 'float' has no len()")
    assert run.state.steps["report"].status == "cached"  # the failure stops only what runs after deploy
