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
    "read a constant from an un-annotated cell": (
        ["offset = 2", "%%step a\nx = offset + 1"],
        "step 'a' reads 'offset', but it is defined in a cell that is not annotated (or typed interactively); "
        "if it is a setting, put 'offset = 2' in a %%parameters cell"),
    "read from an un-annotated cell": (["table = {n: n * n for n in range(100)}", "%%step a\nx = table[3]"],
                                       "step 'a' reads 'table', but it is defined in a cell that is not annotated "
                                       "(or typed interactively); move that code into a step that runs before 'a', "
                                       "or into %%functions."),
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
                             "'gen' (a builtins.generator, produced by step 'a') cannot be passed between steps (a generator "
                             "is a paused function); re-create it inside each step that uses it"),
    "open file": (["%%step a\nfh = open('f.txt', 'w')", "%%step b\nfh.write('x')"],
                  "cannot be passed between steps"),
    "unknown --param": (["%%parameters\nn = 1", "%%step a\nx = n"], "--param m: there is no parameter 'm'"),
    "--param that is not a number": (["%%parameters\nn = 1", "%%step a\nx = n"],
                                     "--param n=10**10: 'n' is a number (default 1); give a number."),
    "--param beyond every number": (["%%parameters\nn = 1", "%%step a\nx = n"],
                                    "--param n=1e999: 'n' is a whole number (default 1) and 1e999 is inf; "
                                    "give a finite number."),
}
LINES = {"unknown --param": "--param m=2", "--param that is not a number": "--param n=10**10",
         "--param beyond every number": "--param n=1e999"}


@pytest.mark.parametrize("case", list(CASES))
def test_validation_error(kernel, case, capsys):
    cells, message = CASES[case]
    for source in cells:
        kernel.run(source)
    before = {k: id(v) for k, v in kernel.ns.items() if not k.startswith("_")}
    line = LINES.get(case, "")
    error = kernel.error(f"%kale_run {line}")
    assert isinstance(error, KaleError)
    assert message in str(error)
    assert "\n" not in str(error) and str(error).count("cannot be passed between steps") <= 1
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


def test_every_problem_is_named_in_one_refusal_the_most_fundamental_first(kernel, tmp_path):
    from kale_magic.history.store import RunStore

    kernel.cells("%%parameters\nn = len('ab')",
                 "%%step a\nfh = open('f.txt', 'w')\ngen = (i for i in range(3))",
                 "%%step b\nfh.write('x')\nfirst = next(gen)",
                 "%%step c --after nowhere\nz = 1")
    error = kernel.error("%kale_run")
    assert isinstance(error, ValidationError)
    starts = ["step 'c' runs --after 'nowhere', but no step of that name was recorded",
              "the %%parameters cell, line 1: parameter 'n' must be a literal",
              "'fh' (a _io.TextIOWrapper, produced by step 'a') cannot be passed between steps (a file object",
              "'gen' (a builtins.generator, produced by step 'a') cannot be passed between steps (a generator"]
    assert len(error.problems) == len(starts)
    assert all(problem.startswith(start) for problem, start in zip(error.problems, starts)), error.problems
    assert str(error).startswith("4 problems, the most fundamental first:\n  1. step 'c' runs --after")
    rendered = error._render_traceback_()
    assert rendered[0] == "Kale validation: 4 problems, the most fundamental first:" and len(rendered) == 5
    assert kernel.magics.last_run is None  # not a run: nothing recorded, no files
    assert RunStore.for_workspace(tmp_path).runs() == []
    assert not (tmp_path / ".kale" / "runs").exists()


def test_a_problem_does_not_cascade_into_guesses_about_what_it_hides(kernel):
    kernel.error("%%step a\nx = = 1")  # a syntax error: what the step defines is unknown
    kernel.error("%%step b\ny = x + 1")
    kernel.run("%%step c --after nope\nw = 1")
    kernel.run("%%step d\nv = w + 1")  # after c, whose own parents are unknown
    error = kernel.error("%kale_run")
    assert len(error.problems) == 2, error.problems
    assert error.problems[0].startswith("the %%step a cell has a syntax error on line 1")
    assert "runs --after 'nope'" in error.problems[1]


def test_a_name_read_by_many_steps_is_one_problem(kernel):
    kernel.error("%%step a\nx = missing_name")
    kernel.error("%%step b\ny = missing_name")
    error = kernel.error("%kale_run")
    assert error.problems == ["step 'a' reads 'missing_name', but it is not defined anywhere in the notebook; "
                              "check the spelling."]
