"""Annotation magics record themselves and run the cell, in a real IPython shell."""

import json
import subprocess
import sys

import pytest

from kale_magic.errors import ValidationError


def recorded(kernel):
    return [(c.kind, c.step, c.source.strip()) for c in kernel.magics.session.ordered()]


def test_cells_run_normally_and_are_recorded(kernel):
    kernel.cells("%%imports\nimport math", "%%parameters\nn = 3", "%%step a\nx = math.sqrt(n * 3)",
                 "%%skip\ndebug = x * 2", "%%metrics\nx")
    assert kernel.ns["x"] == 3.0 and kernel.ns["debug"] == 6.0
    assert recorded(kernel) == [("imports", None, "import math"), ("parameters", None, "n = 3"),
                                ("step", "a", "x = math.sqrt(n * 3)"), ("skip", None, "debug = x * 2"),
                                ("metrics", None, "x")]


def test_last_expression_displays(kernel, capsys):
    kernel.run("%%step a\nv = 20\nv + 1")
    assert "21" in capsys.readouterr().out


def test_reexecuting_a_cell_replaces_its_record(kernel):
    kernel.run("%%step a\nx = 1", cell_id="c1")
    kernel.run("%%step b\ny = 2", cell_id="c2")
    kernel.run("%%step a2\nx = 10", cell_id="c1")  # same cell edited: renamed step
    assert recorded(kernel) == [("step", "a2", "x = 10"), ("step", "b", "y = 2")]


def test_another_cell_with_the_same_step_name_continues_it(kernel):
    kernel.run("%%step a\nx = 1", cell_id="c1")
    kernel.run("%%step a\ny = x + 1", cell_id="c2")
    plan = kernel.magics.plan()
    assert plan.steps["a"].cells == ("x = 1", "y = x + 1")


def test_without_cell_ids_the_same_step_name_replaces(kernel):
    kernel.run("%%step a\nx = 1")
    kernel.run("%%step a\nx = 2")
    assert recorded(kernel) == [("step", "a", "x = 2")]


def test_failing_cell_fails_and_is_still_recorded(kernel):
    error = kernel.error("%%step a\nx = 1 / 0")
    assert type(error).__name__ == "CellFailed"
    assert recorded(kernel) == [("step", "a", "x = 1 / 0")]


def test_step_options_are_parsed(kernel):
    kernel.run("%%step a\nx = 1")
    kernel.run('%%step b --after "" --cpu 2 --memory 1Gi --gpu 1 --retries 3 --timeout 60 --image img:1 --no-cache\ny = 1')
    options = kernel.magics.session.ordered()[1].options
    assert (options.after, options.cpu, options.memory, options.gpu, options.retries, options.timeout,
            options.image, options.no_cache) == ((), "2", "1Gi", 1, 3, 60, "img:1", True)
    assert kernel.magics.plan().steps["b"].parents == ()


def test_bad_option_is_a_usage_error_and_the_cell_does_not_run(kernel):
    from IPython.core.error import UsageError

    error = kernel.error("%%step a --gpu many\nx = 1")
    assert isinstance(error, UsageError)
    assert "x" not in kernel.ns


def test_invalid_step_name_is_refused_before_running(kernel):
    error = kernel.error("%%step Train_Model\nx = 1")
    assert isinstance(error, ValidationError)
    assert "step name 'Train_Model' is not valid" in str(error) and "%%step train_model" in str(error)
    assert "x" not in kernel.ns


def test_kale_reset_forgets_annotations(kernel, capsys):
    kernel.run("%%step a\nx = 1")
    kernel.run("%kale_reset")
    assert len(kernel.magics.session) == 0 and kernel.ns["x"] == 1


def test_kale_show_prints_steps_edges_and_values(kernel, capsys):
    kernel.cells("%%step a\nimport numpy as np\narr = np.zeros(4)", "%%step b\ntotal = arr.sum()")
    capsys.readouterr()
    kernel.run("%kale_show")
    out = capsys.readouterr().out
    assert "order: execution order" in out
    assert "a -> b: arr" in out
    assert "arr: numpy.ndarray, 32 B, numpy backend, a -> b" in out


def test_notebook_order_comes_from_the_notebook_file(kernel, tmp_path, capsys):
    import nbformat.v4 as v4
    import nbformat

    cells = [v4.new_code_cell("%%step first\nx = 1"), v4.new_code_cell("%%step second\ny = 2")]
    nb = v4.new_notebook(cells=cells)
    path = tmp_path / "order.ipynb"
    nbformat.write(nb, str(path))
    kernel.run(f"%config Kale.notebook_path = {str(path)!r}")
    kernel.run(cells[1].source, cell_id=cells[1].id)  # executed out of order
    kernel.run(cells[0].source, cell_id=cells[0].id)
    plan = kernel.magics.plan()
    assert list(plan.steps) == ["first", "second"]
    assert plan.steps["second"].parents == ("first",)
    assert plan.order_source == f"notebook file {path}"


def test_unload_removes_magics_and_hooks(kernel):
    shell = kernel.shell
    hooks = len(shell.events.callbacks["pre_run_cell"])
    shell.run_line_magic("unload_ext", "kale_magic")
    assert "step" not in shell.magics_manager.magics["cell"]
    assert "kale_run" not in shell.magics_manager.magics["line"]
    assert len(shell.events.callbacks["pre_run_cell"]) == hooks - 1
    shell.run_line_magic("load_ext", "kale_magic")
    kernel.magics.workers = None
    kernel.run("%%step a\nx = 1")
    shell.run_line_magic("reload_ext", "kale_magic")
    assert len(shell.events.callbacks["pre_run_cell"]) == hooks
    assert "step" in shell.magics_manager.magics["cell"]


def test_reloading_leaves_one_configurable_that_config_reaches(kernel):
    shell = kernel.shell
    for _ in range(2):
        shell.run_line_magic("unload_ext", "kale_magic")
        shell.run_line_magic("load_ext", "kale_magic")
    assert [type(c).__name__ for c in shell.configurables].count("Kale") == 1
    kernel.run("%config Kale.max_parallel = 3")
    assert kernel.magics.max_parallel == 3


def test_load_ext_imports_nothing_heavy():
    code = ("import sys, json\nfrom IPython.core.interactiveshell import InteractiveShell\n"
            "InteractiveShell.instance().run_line_magic('load_ext', 'kale_magic')\n"
            "print(json.dumps(sorted(m for m in ('kfp', 'pandas', 'torch', 'ipywidgets', 'nbformat', 'numpy', "
            "'pyarrow', 'dill') if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out.strip().splitlines()[-1]) == []


def test_help_documents_options(kernel, capsys):
    kernel.run("%%step?")
    assert "--after" in capsys.readouterr().out


def test_planning_never_serializes_values(kernel):
    kernel.cells("%%functions\nclass NoPickle:\n    def __reduce__(self):\n        raise AssertionError('serialized')",
                 "%%step a\nobj = NoPickle()", "%%step b\nname = type(obj).__name__")
    plan = kernel.magics.plan()
    assert [t.name for t in plan.steps["b"].inputs] == ["obj"]
    assert plan.steps["b"].inputs[0].type_name.endswith("NoPickle")
