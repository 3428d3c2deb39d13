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
                 "%%parameters\nparts = ['a', 'b', 'c', 'd']\nwhere = '" + str(tmp_path / "started") + "'",
                 "%%step wait --foreach part in parts\nos.makedirs(where, exist_ok=True)\n"
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
