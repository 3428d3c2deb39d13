"""Every validation error: raised before anything runs, one sentence, no traceback, nothing changed."""

from pathlib import Path

import pytest

from kale_magic.errors import KaleError, ValidationError

CASES = {
    "unknown --after": (["%%step a\nx = 1", "%%step b --after nope\ny = 2"],
                        "step 'b' runs --after 'nope', but no step of that name was recorded (known steps: a, b)"),
    "cycle": (["%%step a --after b\nx = 1", "%%step b --after a\ny = 2"],
              "the steps a, b depend on each other in a cycle"),
    "read from a skip cell": (["%%skip\nlimit = 3", "%%step a\nx = limit + 1"],
                              "step 'a' reads 'limit', but it is defined in a %%skip cell"),
    "read from an un-annotated cell": (["offset = 2", "%%step a\nx = offset + 1"],
                                       "step 'a' reads 'offset', but it is defined in a cell that is not annotated"),
    "read from a step that is not an ancestor": (
        ["%%step a\nx = 1", "%%step b --after ''\ny = x + 1"],
        "step 'b' reads 'x', but it is produced by step 'a', which does not run before 'b'; add --after a"),
    "read from nowhere": (["%%step a\nx = 1", "%%step b\ntry:\n    y = undefined_name\nexcept NameError:\n    y = 0"],
                          "step 'b' reads 'undefined_name', but it is not defined anywhere in the notebook"),
    "two unordered writers": (
        ["%%step a\nv = 1", "%%step b --after a\nv = 2", "%%step c --after a\nv = 3", "%%step d --after b,c\nw = v"],
        "steps 'b' and 'c' both change 'v' and neither runs after the other"),
    "non-literal parameter": (["%%parameters\nn = len('abc')", "%%step a\nx = n"],
                              "parameter 'n' must be a literal"),
    "metric nobody produces": (["%%step a\nx = 1", "%%metrics\naccuracy = 0.5\naccuracy"],
                               "each line must name one variable"),
    "metric no step produces": (["%%step a\nx = 1", "accuracy = 0.9", "%%metrics\naccuracy"],
                                "the %%metrics cell names 'accuracy', but no step produces it"),
    "no steps": (["%%imports\nimport os"], "no %%step cells were recorded"),
    "unmarshallable value": (["%%step a\ngen = (i for i in range(3))", "%%step b\nfirst = next(gen)"],
                             "'gen' (a builtins.generator, produced by step 'a') cannot be passed between steps"),
    "open file": (["%%step a\nfh = open('f.txt', 'w')", "%%step b\nfh.write('x')"],
                  "cannot be passed between steps"),
    "unknown --param": (["%%parameters\nn = 1", "%%step a\nx = n"], "--param m: there is no parameter 'm'"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_validation_error(kernel, case, capsys):
    cells, message = CASES[case]
    for source in cells:
        kernel.run(source)
    before = {k: id(v) for k, v in kernel.ns.items() if not k.startswith("_")}
    line = "--param m=2" if case == "unknown --param" else ""
    error = kernel.error(f"%kale_run {line}")
    assert isinstance(error, KaleError)
    assert message in str(error)
    assert "\n" not in str(error)
    assert error._render_traceback_() == [f"{error.label}: {error}"]
    assert {k: id(v) for k, v in kernel.ns.items() if not k.startswith("_")} == before
    assert not list(Path.cwd().glob(".kale/runs/*"))  # nothing written for a run that never started


def test_invalid_step_name_at_plan_time():
    from kale_magic.plan.planner import check_step_name

    for bad in ("Train", "1step", "with space", "x" * 64, "end-"):
        with pytest.raises(ValidationError, match="is not valid"):
            check_step_name(bad)
    for good in ("a", "train_model", "load-data2"):
        check_step_name(good)


def test_error_renders_without_traceback_in_the_shell(kernel, capsys):
    kernel.run("%%step a\nx = 1")
    kernel.shell.run_cell("%kale_run --param nope=1")
    out = capsys.readouterr()
    text = out.out + out.err
    assert "Kale validation: --param nope" in text
    assert "Traceback" not in text
