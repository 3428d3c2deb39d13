"""``--foreach VAR in NAME``: the same meaning in the kernel and on the local engine (issue 24, points 1, 3, 7)."""

import pytest

from oracle import check, run_cells

KFOLD = [
    "%%imports\nimport numpy as np",
    "%%parameters\nn_folds = 5\nthreshold = 0.5",
    "%%step split\nX = np.random.default_rng(0).normal(size=(60, 3))\ny = X @ [1.0, -2.0, 0.5] + "
    "np.sin(np.arange(60.0)) / 10\nfolds = [np.arange(60)[i::n_folds] for i in range(n_folds)]",
    "%%step train --foreach fold in folds\nmask = np.ones(len(y), bool)\nmask[fold] = False\n"
    "model = np.linalg.lstsq(X[mask], y[mask], rcond=None)[0]\n"
    "score = float(1 - np.mean((X[fold] @ model - y[fold]) ** 2) / np.var(y[fold]))",
    "%%step check --foreach fold in folds\ncalibrated = model * (1 + 0.01 * len(fold))",
    "%%step summary\naccuracy = float(np.mean(score))\nbest = int(np.argmax(score))\nweights = np.stack(calibrated)",
]

FILES = [
    "%%imports\nimport glob\nimport json",
    "%%step find\nfiles = sorted(glob.glob('data/part-*.json'))",
    "%%step parse --foreach path in files\nwith open(path) as f:\n    rows = json.load(f)\ncount = len(rows)\n"
    "total = sum(r['v'] for r in rows)",
    "%%step report\nsizes = dict(zip(files, count))\ngrand = sum(total)",
]

NESTED = [
    "%%step make\ngroups = {'a': {'x': [1, 2], 'w': 0.5}, 'b': {'x': [3], 'w': 2.0}, 'c': {'x': [], 'w': 1.0}}",
    "%%step per --foreach key in groups\nscaled = [v * groups[key]['w'] for v in groups[key]['x']]\n"
    "size = len(scaled)",
    "%%step again --foreach key in groups\npair = (key, size, sum(scaled))",
    "%%step join\nflat = [v for part in scaled for v in part]\nby_key = {k: s for k, s, _ in pair}",
]

PARAMETER = [
    "%%parameters\nalphas = [0.1, 1.0, 10.0]",
    "%%step fit --foreach alpha in alphas\npenalty = alpha ** 2",
    "%%step pick\nlowest = min(penalty)",
]


def _files(root):
    import json

    (root / "data").mkdir(exist_ok=True)
    for i in range(4):
        (root / f"data/part-{i}.json").write_text(json.dumps([{"v": i * 10 + j} for j in range(i + 1)]))


@pytest.mark.parametrize("cells", [KFOLD, FILES, NESTED, PARAMETER], ids=["k-fold", "files", "nested", "parameter"])
def test_every_value_a_foreach_run_saves_equals_the_kernels(kernel, tmp_path, cells):
    _files(tmp_path)
    after_step = run_cells(kernel, cells)
    run = kernel.shell.run_line_magic("kale_run", "")
    assert check(run, after_step) >= 2


def test_adding_an_item_runs_only_it_and_what_reads_the_lists(kernel):
    cells = ["%%parameters\nseeds = [0, 1, 2]", "%%step draw --foreach seed in seeds\nvalue = seed * 10 + 1",
             "%%step total\nsum_ = sum(value)"]
    run_cells(kernel, cells)
    first = kernel.shell.run_line_magic("kale_run", "")
    assert [i.status for i in first.state.steps["draw"].items] == ["succeeded"] * 3
    second = kernel.shell.run_line_magic("kale_run", "--param seeds=[0,1,2,3]")
    assert [i.status for i in second.state.steps["draw"].items] == ["cached"] * 3 + ["succeeded"]
    assert second.steps["total"].status == "succeeded" and second.load("sum_") == 64
    third = kernel.shell.run_line_magic("kale_run", "--param seeds=[5,0,1,2,3]")  # a new first item
    assert [i.status for i in third.state.steps["draw"].items] == ["succeeded"] + ["cached"] * 4
    assert third.load("value") == [51, 1, 11, 21, 31]


def test_items_run_concurrently_up_to_max_parallel(kernel, tmp_path):
    """Each item waits until every item has started (a file per item): only concurrent items can end."""
    kernel.cells("%config Kale.max_parallel = 4",
                 "%%imports\nimport os, pathlib, time",
                 "%%parameters\nparts = ['a', 'b', 'c', 'd']\nwhere = '" + str(tmp_path / "started") + "'")
    (tmp_path / "started").mkdir()  # the kernel runs the items one after another: none waits there
    for part in "abcd":
        (tmp_path / "started" / part).touch()
    kernel.cells("%%step wait --foreach part in parts\nos.makedirs(where, exist_ok=True)\n"
                 "pathlib.Path(where, part).touch()\ndeadline = time.time() + 60\n"
                 "while len(os.listdir(where)) < len(parts) and time.time() < deadline:\n    time.sleep(0.01)\n"
                 "seen = len(os.listdir(where))")
    import shutil

    shutil.rmtree(tmp_path / "started")
    run = kernel.shell.run_line_magic("kale_run", "--no-cache")
    assert run.load("seen") == [4, 4, 4, 4]


def test_a_failed_item_skips_only_its_own_continuation_and_the_fan_in(kernel, tmp_path):
    kernel.cells("%%imports\nimport os", "%%parameters\nxs = [1, 0, 2]",
                 "%%step inv --foreach x in xs\ny = 1 / x if x or os.path.exists('boom') else 0.0",
                 "%%step again --foreach x in xs\nz = y * 2", "%%step join\ntotal = sum(z)")
    (tmp_path / "boom").write_text("item 1 fails in the run")
    run = kernel.kale_run("")
    assert run.status == "failed"
    assert [i.status for i in run.state.steps["inv"].items] == ["succeeded", "failed", "succeeded"]
    assert [i.status for i in run.state.steps["again"].items] == ["succeeded", "skipped", "succeeded"]
    assert run.steps["join"].status == "skipped"
    assert "inv[1]: ZeroDivisionError: division by zero" in run.steps["inv"].error
    from kale_magic.panel.render import render_html, render_text

    text = render_text(run.state)
    assert "inv ×3: 2 ✓ 1 ✗ failed" in text and "again ×3: 2 ✓ 1 – skipped" in text
    assert "      ✗ inv[1] failed: ZeroDivisionError" in text  # the failed item's own row under its step
    page = render_html(run.state)
    assert 'class="kale-node-stack"' in page and "inv ×3: 2 ✓ 1 ✗" in page
    assert page.count('data-name="inv[') == 3  # the items' rows, grouped under the step (expandable)


def test_a_foreach_cell_in_the_kernel_binds_lists_and_continues_item_by_item(kernel):
    kernel.cells("%%step make\nwords = ['a', 'bb', 'ccc']",
                 "%%step size --foreach w in words\nn = len(w)\nprint(w, n)",
                 "%%step twice --foreach w in words\nm = n * 2")
    assert kernel.ns["n"] == [1, 2, 3] and kernel.ns["m"] == [2, 4, 6]
    assert "w" not in kernel.ns  # the item exists only inside the loop, as in a step


def test_every_foreach_mistake_is_one_sentence_in_one_refusal(kernel):
    from kale_magic.errors import ValidationError

    for cell in ["%%parameters\nalphas = [1, 2]",
                 "stuff = [1, 2]",  # not annotated: no step produces it
                 "%%step make\nfolds = [1, 2]\nbase = 10",
                 "%%step a --after make --foreach s in stuff\nr = s * 2",
                 "%%step b --after make --foreach fold in folds\nbase = base + fold",  # rebinds what it receives
                 "%%step c --after make --foreach base in folds\nq = base",  # the item shadows make's 'base'
                 "%%step d --after make --foreach fold in folds\nu = fold + 1",  # b's clause, not after b
                 "%%step e --after make --foreach alpha in alphas\nv = alpha"]:
        kernel.shell.run_cell(cell)
    error = kernel.error("%kale_run --param alphas=5")  # a parameter that cannot be looped over
    assert isinstance(error, ValidationError)
    expected = [
        "step 'a' (--foreach s in stuff) loops over 'stuff', which no step produces and no %%parameters cell "
        "defines; check the spelling or produce it in an earlier step.",
        "step 'b' (--foreach fold in folds) changes 'base', a value it receives; its items run apart and their "
        "changes cannot be merged: produce a new value instead (e.g. base_fold = ...).",
        "step 'c' (--foreach base in folds) names its item 'base', which is also a value step 'make' produces; "
        "give the item a name of its own, e.g. --foreach base_item in folds.",
        "step 'd' (--foreach fold in folds) repeats the clause of step 'b' but does not run after it, so it cannot "
        "continue its items; add --after b, or loop with another item name to start a new loop.",
        "step 'e' (--foreach alpha in alphas): step 'e' loops over 'alphas' (int), which --foreach cannot "
        "iterate; make it a list, tuple, range, dict, 1-D numpy array or pandas Series (e.g. list(...)).",
    ]
    assert sorted(error.problems) == sorted(expected), error.problems


def test_a_mutation_in_place_of_a_received_value_is_refused(kernel):
    kernel.cells("%%step make\nkeys = ['a', 'b']\ntable = {}", "%%step fill --foreach k in keys\ntable[k] = 1")
    error = kernel.error("%kale_run")
    assert error.problems == ["step 'fill' (--foreach k in keys) changes 'table', a value it receives; its items "
                              "run apart and their changes cannot be merged: produce a new value instead (e.g. "
                              "table_k = ...)."]


@pytest.mark.parametrize("line, said", [
    ("--foreach fold folds", "expected 3 arguments"),
    ("--foreach fold on folds", "--foreach fold on folds: write it as --foreach VAR in NAME"),
    ("--foreach folds in folds", "the item needs its own name"),
])
def test_a_malformed_clause_is_refused_at_the_cell(kernel, line, said):
    from IPython.core.error import UsageError

    kernel.cells("%%step make\nfolds = [1]")
    error = kernel.error(f"%%step t {line}\nx = 1")
    assert isinstance(error, UsageError) and said in str(error)


@pytest.mark.parametrize("value, said", [
    ("(i for i in range(3))", "(generator), which --foreach cannot iterate"),
    ("{1, 2}", "(set), which --foreach cannot iterate"),
    ("np.zeros((2, 2))", "a 2-D numpy array of shape (2, 2)"),
    ("list(range(10_001))", "(list) of 10,001 items, more than --foreach runs (10,000)"),
])
def test_a_value_foreach_cannot_iterate_is_refused_naming_it(kernel, value, said):
    from IPython.core.error import UsageError

    kernel.cells("import numpy as np", f"%%step make\nthings = {value}")
    error = kernel.error("%%step use --foreach t in things\nx = t")
    assert isinstance(error, UsageError) and "step 'use' loops over 'things'" in str(error) and said in str(error)


def test_accepted_iterables_give_their_items_in_order():
    import numpy as np
    import pandas as pd

    from kale_magic.items import items

    for value, expected in [([1, 2], [1, 2]), ((1, 2), [1, 2]), (range(2), [0, 1]), ({"b": 1, "a": 2}, ["b", "a"]),
                            (np.array([3, 4]), [3, 4]), (pd.Series([5, 6]), [5, 6]), (pd.Index(["x"]), ["x"]),
                            (pd.RangeIndex(2), [0, 1])]:
        assert items(value, "s", "v") == expected


def test_a_metric_of_a_foreach_step_is_refused_in_one_sentence(kernel):
    kernel.cells("%%parameters\nxs = [1, 2]", "%%step sq --foreach x in xs\nacc = x * x")
    kernel.shell.run_cell("%%metrics\nacc")
    error = kernel.error("%kale_run")
    assert error.problems == ["metric 'acc' is produced by step 'sq' once per item (--foreach); compute one value "
                              "from the list in a later step (e.g. mean_acc = sum(acc) / len(acc)) and name that."]


def test_kale_show_marks_a_foreach_step_with_its_clause(kernel):
    from kale_magic.panel.plan_view import PlanView

    kernel.cells("%%step make\nwords = ['a', 'bb']", "%%step size --foreach w in words\nn = len(w)",
                 "%%step twice --foreach w in words\nm = n * 2")
    view = PlanView(kernel.magics.plan())
    assert "  twice (after size); once per item: --foreach w in words, continuing size item by item" in repr(view)
    page = view._repr_html_()
    assert page.count('class="kale-node-stack"') == 4 and "∀ w in words" in page  # two cards behind each node
