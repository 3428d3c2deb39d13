"""The planner's phases driven directly, without a kernel: recorded cells are plain objects and the
namespace a plain dict, so each phase's data and problems are checked on their own."""

import pytest

from kale_magic.errors import ValidationError
from kale_magic.plan.planner import (Environment, assemble, build_plan, find_metrics, order_steps, read_code,
                                     read_parameters, trace_data_flow)
from kale_magic.plan.session import RecordedCell, StepOptions


def cell(kind, source, step=None, seq=0, created=(), **options):
    return RecordedCell(kind, source, source, f"{kind}:{step}:{seq}:{source}", seq, None, step,
                        StepOptions(**options), frozenset(created))


def steps(*specs):
    """Step cells from (name, source) or (name, source, options) tuples, in notebook order."""
    return [cell("step", spec[1], spec[0], i, **(spec[2] if len(spec) > 2 else {})) for i, spec in enumerate(specs)]


def no_code():
    return read_code([])[0]


# parameters -----------------------------------------------------------------------

def test_parameters_are_the_literals_with_overrides_read_against_their_defaults():
    found, problems = read_parameters([cell("parameters", "n = 3\nname = 'a'\nrate = 0.5")],
                                      {"n": "10", "name": "10"})
    assert found.values == {"n": 10, "name": "10", "rate": 0.5}
    assert problems.sentences == [] and found.invalid == frozenset()


def test_a_parameter_that_is_no_literal_is_a_problem_and_its_name_is_known_as_invalid():
    found, problems = read_parameters([cell("parameters", "n = len('abc')")], {"m": "1"})
    assert found.invalid == {"n"} and "n" not in found.values
    assert len(problems.sentences) == 2
    assert "--param m" in problems.sentences[1] and "no parameter 'm'" in problems.sentences[1]


def test_a_parameters_cell_that_does_not_parse_is_unreadable():
    _, problems = read_parameters([cell("parameters", "n = (")], {})
    assert problems.unreadable and len(problems.sentences) == 1


# code every step runs -------------------------------------------------------------

def test_code_defines_its_names_and_every_step_reads_only_what_it_reads_outside_function_bodies():
    code, problems = read_code([cell("imports", "import math"),
                                cell("functions", "scale = factor * 2\ndef f(x):\n    return x * hidden",
                                     created={"made_by_exec"})])
    assert {"math", "scale", "f", "made_by_exec"} <= code.defined
    assert code.always_reads == ("factor",)
    assert problems.sentences == []


def test_names_the_shell_owns_are_not_read_by_every_step():
    code, _ = read_code([cell("functions", "x = display")], frozenset({"display"}))
    assert code.always_reads == ()


# grouping and order ---------------------------------------------------------------

def test_cells_of_one_name_continue_their_step_and_steps_follow_notebook_order():
    structure, problems = order_steps(steps(("load", "a = 1"), ("train", "b = a"), ("load", "c = 2")), no_code())
    assert structure.order == ["load", "train"]
    assert len(structure.steps["load"].cells) == 2
    assert structure.parents == {"load": (), "train": ("load",)}
    assert structure.changes["load"] == {"a", "c"}
    assert problems.sentences == []


def test_after_orders_steps_and_ancestors_follow_it():
    structure, _ = order_steps(steps(("a", "x = 1"), ("b", "y = 1", {"after": ()}),
                                     ("c", "z = x + y", {"after": ("a", "b")})), no_code())
    assert structure.parents["b"] == () and structure.ancestors["c"] == {"a", "b"}
    assert structure.order == ["a", "b", "c"]


def test_a_cycle_is_one_problem_and_the_steps_keep_notebook_order_as_unordered():
    structure, problems = order_steps(steps(("a", "x = 1", {"after": ("b",)}), ("b", "y = x", {"after": ("a",)})),
                                      no_code())
    assert structure.order == ["a", "b"] and structure.unordered == {"a", "b"}
    assert len(problems.sentences) == 1 and "cycle" in problems.sentences[0]


def test_an_after_naming_no_step_makes_that_step_and_its_descendants_unordered():
    structure, problems = order_steps(steps(("a", "x = 1"), ("b", "y = x", {"after": ("nope",)}), ("c", "z = y")),
                                      no_code())
    assert structure.unordered == {"b", "c"}
    assert ["'nope'" in s for s in problems.sentences] == [True]


def test_no_step_cells_is_a_problem_and_an_empty_order():
    structure, problems = order_steps([], no_code())
    assert structure.order == [] and "no %%step cells" in problems.sentences[0]


def test_bad_step_names_are_problems_of_grouping():
    _, problems = order_steps(steps(("Load Data", "a = 1")), no_code())
    assert "step name 'Load Data' is not valid" in problems.sentences[0]


def test_a_step_reads_what_the_functions_it_calls_read():
    code, _ = read_code([cell("functions", "def f():\n    return rate")])
    structure, _ = order_steps(steps(("a", "y = f()")), code)
    reads, _ = structure.names["a"]
    assert "rate" in reads.reads


# data flow ------------------------------------------------------------------------

def plan_flow(step_specs, namespace, parameters="", functions=(), unsure=False):
    cells = steps(*step_specs)
    params, _ = read_parameters([cell("parameters", parameters)] if parameters else [], {})
    code, _ = read_code([cell("functions", f) for f in functions])
    structure, _ = order_steps(cells, code)
    return trace_data_flow(structure, params, code, Environment.of(namespace), cells, unsure=unsure)


def test_each_value_comes_from_its_nearest_producer_typed_by_the_live_value():
    flow, problems = plan_flow([("a", "x = 1"), ("b", "x = x + 1"), ("c", "y = x * 2")], {"x": 3, "y": 6})
    assert [(t.name, t.producer) for t in flow.inputs["c"]] == [("x", "b")]
    assert [(t.name, t.producer) for t in flow.inputs["b"]] == [("x", "a")]
    assert flow.inputs["c"][0].type_name == "builtins.int"
    assert problems.sentences == []


def test_the_last_value_of_each_name_is_saved_as_a_result_even_when_no_step_reads_it():
    flow, _ = plan_flow([("a", "x = 1"), ("b", "y = x")], {"x": 1, "y": 1})
    assert [t.name for t in flow.outputs["b"]] == ["y"]
    assert [t.name for t in flow.outputs["a"]] == ["x"]


def test_parameters_reach_the_steps_that_read_them():
    flow, _ = plan_flow([("a", "x = n * 2"), ("b", "y = x")], {"x": 2}, parameters="n = 1")
    assert flow.parameters == {"a": ["n"], "b": []}


def test_a_name_nothing_defines_is_a_problem_unless_an_earlier_cell_could_not_be_read():
    _, problems = plan_flow([("a", "y = undefined_name")], {})
    assert problems.sentences == ["step 'a' reads 'undefined_name', but it is not defined anywhere in the "
                                  "notebook; check the spelling."]
    _, unsure = plan_flow([("a", "y = undefined_name")], {}, unsure=True)
    assert unsure.sentences == []


def test_a_value_a_later_step_produces_says_which_after_is_missing():
    _, problems = plan_flow([("a", "y = x", {"after": ()}), ("b", "x = 1", {"after": ()})], {"x": 1})
    assert "add --after b to the %%step a line" in problems.sentences[0]


def test_a_value_that_cannot_move_between_steps_is_a_problem_of_values():
    flow, problems = plan_flow([("a", "g = (i for i in range(3))"), ("b", "y = list(g)")],
                               {"g": (i for i in range(3))})
    assert flow.inputs["b"] == [] and "'g'" in problems.sentences[0]


def test_a_foreach_step_is_a_loop_over_its_producers_value():
    flow, problems = plan_flow([("a", "xs = [1, 2]"), ("b", "y = x * 2", {"foreach": ("x", "xs")})],
                               {"xs": [1, 2], "y": [2, 4]})
    loop = flow.loops["b"]
    assert (loop.var, loop.name, loop.producer) == ("x", "xs", "a")
    assert problems.sentences == []


# metrics --------------------------------------------------------------------------

def test_a_metric_comes_from_the_last_step_that_changes_it():
    structure, _ = order_steps(steps(("a", "acc = 0.1"), ("b", "acc = 0.9")), no_code())
    metrics, problems = find_metrics([cell("metrics", "acc")], structure)
    assert metrics.names == ["acc"] and metrics.producers == {"acc": "b"}
    assert problems.sentences == []


def test_a_metric_no_step_produces_is_a_problem_and_left_out():
    structure, _ = order_steps(steps(("a", "acc = 0.1")), no_code())
    metrics, problems = find_metrics([cell("metrics", "acc\nloss")], structure)
    assert metrics.names == ["acc"] and "'loss'" in problems.sentences[0]


# assembly and the whole ---------------------------------------------------------

def test_the_phases_assembled_are_the_plan_build_plan_makes():
    cells = [cell("imports", "import math"), cell("parameters", "n = 2"),
             *steps(("a", "x = [i for i in range(n)]"), ("b", "total = math.fsum(x)")), cell("metrics", "total")]
    namespace = {"math": __import__("math"), "n": 2, "x": [0, 1], "total": 1.0}
    env = Environment.of(namespace)
    kinds = {kind: [c for c in cells if c.kind == kind] for kind in ("imports", "functions", "parameters",
                                                                      "step", "metrics", "skip")}
    params, _ = read_parameters(kinds["parameters"], {"n": "3"})
    code, _ = read_code(kinds["imports"], env.ignored)
    structure, _ = order_steps(kinds["step"], code)
    flow, _ = trace_data_flow(structure, params, code, env, cells)
    metrics, _ = find_metrics(kinds["metrics"], structure, flow.loops)
    identity = dict(pipeline="p", experiment="e", description="d", notebook_path=None, order_source="test")
    assembled = assemble(structure, params, flow, metrics, kinds, **identity)
    assert assembled == build_plan(cells, env, overrides={"n": "3"}, **identity)
    assert assembled.parameters == {"n": 3} and assembled.steps["b"].metrics == ("total",)
    assert [t.name for t in assembled.steps["b"].inputs] == ["x"]


def test_build_plan_names_every_phases_problems_the_most_fundamental_first():
    cells = [cell("parameters", "n = len('x')"), *steps(("a", "y = nowhere"), ("b", "z = (")),
             cell("metrics", "acc")]
    with pytest.raises(ValidationError) as refusal:
        build_plan(cells, Environment.of({}))
    problems = refusal.value.problems
    assert len(problems) == 3
    assert problems[0].startswith("the %%step b cell has a syntax error")  # a cell that cannot be read first
    assert problems[1].startswith("the %%parameters cell, line 1: parameter 'n' must be a literal")
    assert problems[2].startswith("the %%metrics cell names 'acc'")  # the metrics last
    # 'nowhere' is no problem: the cell that does not parse might define it
