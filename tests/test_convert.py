"""The Kale-tag converter on notebooks built here, one tag family at a time and all together."""

import copy

import nbformat
import pytest
from IPython.core.interactiveshell import InteractiveShell
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from kale_magic.source.convert import convert, is_kale_notebook, magic_arguments
from kale_magic.extension import arguments
from kale_magic.errors import ValidationError


def code(source, *tags, **extra):
    cell = new_code_cell(source, **extra)
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def kale_notebook(*cells, **kale_meta):
    nb = new_notebook(cells=list(cells))
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "Python 3"}
    if kale_meta:
        nb.metadata["kubeflow_notebook"] = kale_meta
    return nb


def sources(nb):
    return [c.source for c in nb.cells]


def full_notebook():
    """Every tag the converter knows, plus the metadata it carries into %kale_run."""
    return kale_notebook(
        new_markdown_cell("# Title"),
        code("print('scratch')"),
        code("import math", "imports"),
        code("import json"),
        code("def double(x):\n    return 2 * x", "functions"),
        code("rate = 0.5\nepochs = 3", "pipeline-parameters"),
        code("data = [1, 2, 3]", "step:load", "limit:cpu:2", "limit:memory:4Gi",
             "image:python:3.11", "cache:disabled"),
        code("data.append(4)"),
        code("print(data)", "skip"),
        code("data.append(5)"),
        new_markdown_cell("Prepare the data."),
        code("scaled = [double(v) * rate for v in data]", "block:prep", "prev:load",
             "limit:nvidia.com/gpu:1"),
        code("total = sum(scaled) * epochs\nacc = total / 100\nloss = 1 - acc",
             "step:train", "prev:load", "prev:prep", "my-team-tag", "annotation:owner:ml",
             outputs=[new_output("stream", name="stdout", text="trained\n")], execution_count=7),
        code("print(acc)\nprint(loss)", "pipeline-metrics"),
        experiment_name="digits", pipeline_name="digits-pipe",
        pipeline_description="costs {x} and $HOME's value",
        docker_image="python:3.11-slim",
        volumes=[{"name": "data-pvc", "mount_point": "/data", "type": "pvc"},
                 {"name": "scratch", "mount_point": "/scratch", "type": "new_pvc", "size": 1}],
        steps_defaults=["limit:cpu:1", "label:team:ml"],
        katib_run=False,
    )


def test_every_tag_becomes_its_magic():
    result = convert(full_notebook())
    assert sources(result.notebook)[:-1] == [
        "# Title",
        "%load_ext kale_magic",
        "%%skip\nprint('scratch')",
        "%%imports\nimport math",
        "%%imports\nimport json",
        "%%functions\ndef double(x):\n    return 2 * x",
        "%%parameters\nrate = 0.5\nepochs = 3",
        "%%step load --cpu 2 --memory 4Gi --image python:3.11 --no-cache\ndata = [1, 2, 3]",
        "%%step load\ndata.append(4)",
        "%%skip\nprint(data)",
        "%%step load\ndata.append(5)",
        "Prepare the data.",
        "%%step prep --after load --cpu 1 --gpu 1\nscaled = [double(v) * rate for v in data]",
        "%%step train --after load,prep --cpu 1\ntotal = sum(scaled) * epochs\nacc = total / 100\nloss = 1 - acc",
        "%%metrics\nacc\nloss",
    ]


def test_notebook_metadata_goes_into_the_kale_run_cell():
    last = convert(full_notebook()).notebook.cells[-1].source.split("\n")
    assert last[:2] == ["%config Kale.base_image = 'python:3.11-slim'",
                        "%config Kale.volumes = ['data-pvc:/data']"]
    assert last[2].startswith("run = %kale_run ")
    shell = InteractiveShell.instance()
    shell.user_ns.update(x=1, HOME="somewhere")  # expansion must not touch them
    args = arguments.parse(arguments.kale_run, shell.var_expand(last[2].removeprefix("run = %kale_run ")))
    assert (args.experiment, args.pipeline, args.description) == \
        ("digits", "digits-pipe", "costs {x} and $HOME's value")


@pytest.mark.parametrize("text", ["plain", "two words", "it's $HOME", "{x} and {{y}}", "$x's $y",
                                  "a \"quoted\" 'mix' $x {x}", "$", "$$x", "back\\slash"])
def test_magic_arguments_survive_expansion_and_parsing(text):
    shell = InteractiveShell.instance()
    shell.user_ns.update(x=1, y=2, HOME="somewhere")
    line = magic_arguments(["--description", text, "--param", f"s={text}"])
    args = arguments.parse(arguments.kale_run, shell.var_expand(line))
    assert args.description == text and args.param == [f"s={text}"]


def test_what_has_no_equivalent_is_reported_and_unknown_tags_are_kept():
    result = convert(full_notebook())
    notes = [str(n) for n in result.notes]
    assert "cell 2: untagged code before the first annotated cell; Kale leaves it out of the " \
           "pipeline, converted to %%skip" in notes
    assert any(n.startswith("cell 13: tag 'my-team-tag'") for n in notes)
    assert any(n.startswith("cell 13: tag 'annotation:owner:ml'") for n in notes)
    assert any("volume scratch (type new_pvc" in n for n in notes)
    assert any("steps_defaults entry 'label:team:ml'" in n for n in notes)
    assert not any("katib_run" in n for n in notes)
    train = next(c for c in result.notebook.cells if c.source.startswith("%%step train"))
    assert train.metadata["tags"] == ["my-team-tag", "annotation:owner:ml"]
    load = next(c for c in result.notebook.cells if c.source.startswith("%%step load"))
    assert "tags" not in load.metadata


def test_outputs_order_and_markdown_are_kept_and_the_input_is_untouched():
    original = full_notebook()
    before = copy.deepcopy(original)
    converted = convert(original).notebook
    assert original == before
    train = next(c for c in converted.cells if c.source.startswith("%%step train"))
    assert train.outputs[0].text == "trained\n" and train.execution_count == 7
    assert [c.cell_type for c in converted.cells if c.cell_type == "markdown"] == ["markdown"] * 2
    nbformat.validate(converted)
    assert len({c.id for c in converted.cells}) == len(converted.cells)


def test_old_notebooks_without_cell_ids_get_them():
    nb = kale_notebook(code("x = 1", "step:a"))
    nb.nbformat_minor = 4
    for cell in nb.cells:
        del cell["id"]
    converted = convert(nb).notebook
    assert converted.nbformat_minor == 5
    nbformat.validate(converted)


def test_untagged_cells_continue_the_special_cell_above():
    nb = kale_notebook(code("a = 1", "pipeline-parameters"), code("b = 2"),
                       code("y = a + b\nz = 2 * y", "step:s"), code("print(y)", "pipeline-metrics"),
                       code("print(z)"))
    assert sources(convert(nb).notebook)[1:-1] == [
        "%%parameters\na = 1", "%%parameters\nb = 2", "%%step s\ny = a + b\nz = 2 * y",
        "%%metrics\ny", "%%metrics\nz"]


def test_parameters_printed_as_metrics_are_left_out_as_kale_never_logged_them():
    """Kale's own test notebook prints two parameters in its metrics cell."""
    nb = kale_notebook(code("import numpy as np", "imports"),
                       code("d1 = 5\nd2 = 6\nstrtest = 'test'", "pipeline-parameters"),
                       code("rnd_matrix = np.random.rand(d1, d2)", "limit:nvidia.com/gpu:2",
                            "step:create_matrix"),
                       code("sum_result = rnd_matrix.sum()\nd2 = d2 + 1", "prev:create_matrix",
                            "step:sum_matrix"),
                       code("print(d1)\nprint(d2)\nprint(sum_result)", "pipeline-metrics"))
    result = convert(nb)
    assert result.notebook.cells[-2].source == "%%metrics\nd2\nsum_result"  # d2 is recomputed
    assert [str(n) for n in result.notes] == [
        "cell 5: pipeline-metrics prints parameter 'd1', which no step computes: Kale never logged "
        "it, so it is left out of %%metrics (the run records it as a parameter)"]


def test_a_step_named_again_later_gets_its_options_once():
    nb = kale_notebook(code("a = 1", "step:a"), code("b = 1", "step:b", "prev:a"),
                       code("a2 = 2", "step:a", "limit:memory:1Gi"))
    assert sources(convert(nb).notebook)[1:4] == [
        "%%step a --memory 1Gi\na = 1", "%%step b --after a\nb = 1", "%%step a\na2 = 2"]


def test_existing_load_ext_and_kale_run_are_not_duplicated():
    nb = kale_notebook(code("%load_ext kale_magic"), code("x = 1", "step:a"),
                       code("%kale_run --engine local"))
    assert sources(convert(nb).notebook) == [
        "%load_ext kale_magic", "%%step a\nx = 1", "%kale_run --engine local"]


def test_empty_step_tags_mean_untagged_and_empty_cells_stay_plain():
    nb = kale_notebook(code("x = 1", "step:a"), code("", "block:"), code("y = 2", "step:"))
    assert sources(convert(nb).notebook)[1:4] == ["%%step a\nx = 1", "", "%%step a\ny = 2"]


@pytest.mark.parametrize("cells, message", [
    ([code("x = 1", "step:a", "step:b")], "several steps (a, b)"),
    ([code("x = 1", "step:b", "prev:a")], "prev:a but no step 'a' is defined above"),
    ([code("x = 1", "prev:a")], "no step:NAME tag"),
    ([code("x = 1", "step:a"), code("print(x)\nx + 1", "pipeline-metrics")],
     "line 2 is not print(variable)"),
])
def test_notebooks_kale_rejects_are_rejected_with_the_cell_named(cells, message):
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        convert(kale_notebook(*cells))


def test_kale_notebooks_are_recognised_by_their_tags():
    assert is_kale_notebook(full_notebook())
    assert not is_kale_notebook(convert(full_notebook()).notebook)
    assert not is_kale_notebook(kale_notebook(code("x = 1", "parameters")))


def test_a_later_step_without_prev_tags_has_no_parent_as_in_kale():
    nb = kale_notebook(code("a = 1", "step:a"), code("b = 2", "step:b"), code("c = a", "step:c", "prev:a"))
    assert sources(convert(nb).notebook)[1:4] == [
        "%%step a\na = 1", "%%step b --after=\nb = 2", "%%step c --after a\nc = a"]


def test_katib_search_space_becomes_a_suggested_sweep_line_that_parses_against_the_parameters():
    from kale_magic.run.grid import parse_grid

    katib = {"algorithm": {"algorithmName": "random"}, "objective": {"objectiveMetricName": "loss", "type": "minimize"},
             "maxTrialCount": 12, "parameters": [
                 {"name": "lr", "parameterType": "double", "feasibleSpace": {"min": "0.01", "max": "0.03", "step": "0.01"}},
                 {"name": "depth", "parameterType": "int", "feasibleSpace": {"min": "2", "max": "4"}},
                 {"name": "optimizer", "parameterType": "categorical", "feasibleSpace": {"list": ["sgd", "adam,w"]}},
                 {"name": "momentum", "parameterType": "double", "feasibleSpace": {"min": "0.5", "max": "0.9"}}]}
    nb = kale_notebook(code("lr = 0.1\ndepth = 3\noptimizer = 'sgd'\nmomentum = 0.7", "pipeline-parameters"),
                       code("loss = lr * depth * momentum", "block:train"),
                       experiment_name="tune", katib_run=True, katib_metadata=katib)
    result = convert(nb)
    last = result.notebook.cells[-1].source.splitlines()
    assert last == [
        "run = %kale_run --experiment tune",
        "# Katib search space of the Kale notebook, as a grid (uncomment to run it):",
        "# sweep = %kale_run --experiment tune --sweep lr=0.01,0.02,0.03 --sweep depth=2,3,4 "
        "--sweep \"optimizer=['sgd', 'adam,w']\" --sweep momentum=0.5,0.9",
        "# sweep.best('loss', mode='min')",
    ]
    notes = [str(n) for n in result.notes]
    assert any("Katib parameter momentum: a continuous range 0.5..0.9; the suggestion sweeps its ends" in n for n in notes)
    assert any("Katib's random search becomes a grid sweep of every combination (36 points)" in n for n in notes)
    args = arguments.parse(arguments.kale_run, last[2].partition("%kale_run ")[2])
    grid = parse_grid(args.sweep, {"lr": 0.1, "depth": 3, "optimizer": "sgd", "momentum": 0.7})
    assert len(grid.points) == 36 and grid.points[1] == {"lr": 0.01, "depth": 2, "optimizer": "sgd", "momentum": 0.9}
    assert {p["optimizer"] for p in grid.points} == {"sgd", "adam,w"}
