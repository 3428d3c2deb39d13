"""Step caching on the local engine: exactly the expected steps execute, and values stay right.

Steps append their name to a log file outside the workspace (a side channel named
by ``$KALE_TEST_LOG``, so the step code and the workspace snapshot stay the same
from run to run): what ran is counted, never timed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from kale_magic import cache
from kale_magic.layout import KaleDir
from kale_magic.errors import KaleError
from oracle import check, run_cells, values_equal

@pytest.fixture(autouse=True)
def side_channel(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("KALE_TEST_LOG", str(tmp_path_factory.mktemp("side-channel") / "executions.log"))


def mark(step: str) -> str:
    return f"with open(__import__('os').environ['KALE_TEST_LOG'], 'a') as _log:\n    _log.write('{step}\\n')\n"


def chain(n: int = 10) -> list[str]:
    cells = ["%%parameters\nscale = 2"]
    for i in range(n):
        body = "v0 = [scale]" if i == 0 else f"v{i} = v{i - 1} + [{i}]"
        cells.append(f"%%step s{i}\n{mark(f's{i}')}{body}")
    return cells


def kale_run(kernel, line: str = ""):
    """Run the pipeline; return the run and the names of the steps that executed."""
    log = Path(os.environ["KALE_TEST_LOG"])
    log.unlink(missing_ok=True)
    run = kernel.kale_run(line)
    return run, (log.read_text().split() if log.exists() else [])


def cache_check(kernel, line: str = "") -> str:
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()) as out:
        kernel.shell.run_line_magic("kale_run", f"--cache-only-check {line}")
    return out.getvalue()


def same_values(a, b) -> None:
    """Every value both runs saved is equal: a cached run gives what an uncached one gives."""
    names = {(t.producer, t.name) for t in a.plan.transfers()}
    assert names == {(t.producer, t.name) for t in b.plan.transfers()}
    for producer, name in names:
        assert values_equal(a.load(name, step=producer), b.load(name, step=producer)), (producer, name)


def test_unchanged_rerun_executes_nothing_and_gives_the_kernel_values(kernel):
    after_step = run_cells(kernel, chain())
    first, ran = kale_run(kernel)
    assert ran == [f"s{i}" for i in range(10)]
    second, ran = kale_run(kernel)
    assert ran == []
    assert second.status == "succeeded"
    assert {s.status for s in second.steps.values()} == {"cached"}
    assert {s.cached_from for s in second.steps.values()} == {first.id}
    assert check(second, after_step) == 10
    third, ran = kale_run(kernel)  # reusing a reused result still points at the run that computed it
    assert ran == [] and {s.cached_from for s in third.steps.values()} == {first.id}


def test_cached_values_are_linked_not_copied(kernel):
    run_cells(kernel, ["%%imports\nimport numpy as np", "%%step big\narr = np.arange(100_000)"])
    first, _ = kale_run(kernel)
    second, _ = kale_run(kernel)
    saved = [p for p in (first.run_dir / "data" / "big" / "arr").iterdir() if p.name != "kale.json"][0]
    reused = second.run_dir / "data" / "big" / "arr" / saved.name
    assert saved.stat().st_ino == reused.stat().st_ino
    assert second.notebook("big").read_text() == first.notebook("big").read_text()


def test_editing_the_last_step_runs_only_it(kernel):
    cells = chain()
    run_cells(kernel, cells)
    kale_run(kernel)
    kernel.run(f"%%step s9\n{mark('s9')}v9 = v8 + [90]", cell_id=f"cell-{len(cells) - 1}")
    run, ran = kale_run(kernel)
    assert ran == ["s9"]
    assert run.load("v9") == kernel.ns["v9"] == [2, 1, 2, 3, 4, 5, 6, 7, 8, 90]
    assert run.steps["s9"].status == "succeeded" and run.steps["s9"].reason == "the step's code changed"
    assert run.steps["s9"].error == ""  # a step that succeeded has no error; why it ran is its reason
    uncached, ran = kale_run(kernel, "--no-cache")
    assert len(ran) == 10
    same_values(run, uncached)


PARAMETERS = [
    "%%parameters\nalpha = 1\nbeta = 10",
    f"%%step a\n{mark('a')}base = [1, 2, 3]",
    f"%%step b --after a\n{mark('b')}scaled = [v * alpha for v in base]",
    f"%%step c --after b\n{mark('c')}total = sum(scaled)",
    f"%%step d --after a\n{mark('d')}shifted = [v + beta for v in base]",
    f"%%step e --after d\n{mark('e')}top = max(shifted)",
]


def test_changing_a_parameter_runs_its_readers_and_their_descendants(kernel):
    run_cells(kernel, PARAMETERS)
    kale_run(kernel)
    run, ran = kale_run(kernel, "--param alpha=3")
    assert sorted(ran) == ["b", "c"]
    assert run.steps["b"].reason == "parameter alpha changed (1 -> 3)"
    assert run.load("total") == 18 and run.load("top") == 13
    assert {run.steps[s].status for s in "ade"} == {"cached"}
    again, ran = kale_run(kernel, "--param alpha=3")
    assert ran == []
    uncached, ran = kale_run(kernel, "--param alpha=3 --no-cache")
    assert sorted(ran) == list("abcde")
    same_values(again, uncached)


def test_an_upstream_rerun_with_the_same_output_keeps_descendants_cached(kernel):
    run_cells(kernel, PARAMETERS)
    kale_run(kernel)
    kernel.run(f"%%step a\n{mark('a')}base = [1, 2] + [3]  # same value, new code", cell_id="cell-1")
    _, ran = kale_run(kernel)
    assert ran == ["a"]


FUNCTIONS = [
    "%%functions\ndef double(x):\n    return 2 * x\n\ndef triple(x):\n    return 3 * x\n\n"
    "def via_helper(x):\n    return double(x) + 1",
    f"%%step a --after ''\n{mark('a')}da = double(1)",
    f"%%step b --after ''\n{mark('b')}tb = triple(1)",
    f"%%step c --after ''\n{mark('c')}hc = via_helper(1)",
    f"%%step d --after ''\n{mark('d')}plain = 4",
]


def edit_functions(kernel, source: str) -> None:
    kernel.run(source, cell_id="cell-0")


def test_a_functions_change_runs_only_the_steps_that_call_the_function(kernel):
    after_step = run_cells(kernel, FUNCTIONS)
    kale_run(kernel)
    edit_functions(kernel, FUNCTIONS[0].replace("return 3 * x", "return 30 * x"))
    run, ran = kale_run(kernel)
    assert ran == ["b"]
    assert run.load("tb") == 30
    assert run.steps["b"].reason == "function triple changed"
    edit_functions(kernel, FUNCTIONS[0].replace("return 2 * x", "return 20 * x"))
    run, ran = kale_run(kernel)
    assert sorted(ran) == ["a", "c"]  # c calls double through via_helper
    assert run.load("da") == 20 and run.load("hc") == 21
    assert check(kale_run(kernel)[0], after_step | {"a": {"da": 20}, "b": {"tb": 3}, "c": {"hc": 21}}) == 4


def test_comments_in_functions_do_not_count_but_top_level_statements_do(kernel):
    run_cells(kernel, FUNCTIONS)
    kale_run(kernel)
    edit_functions(kernel, FUNCTIONS[0].replace("%%functions\n", "%%functions\n# helpers\n")
                   .replace("return 2 * x", "return 2 * x  # twice"))
    assert kale_run(kernel)[1] == []
    edit_functions(kernel, FUNCTIONS[0].replace("%%functions\n", "%%functions\nLIMIT = 5\n"))
    run, ran = kale_run(kernel)
    assert sorted(ran) == list("abcd")
    assert run.steps["d"].reason == "top-level statements in %%functions changed"


def test_a_step_using_globals_depends_on_every_function(kernel):
    run_cells(kernel, FUNCTIONS[:1] + [f"%%step dyn\n{mark('dyn')}n = globals()['triple'](2)"])
    kale_run(kernel)
    edit_functions(kernel, FUNCTIONS[0].replace("return 3 * x", "return 4 * x"))
    run, ran = kale_run(kernel)
    assert ran == ["dyn"] and run.load("n") == 8


def test_no_cache_on_a_step_and_on_the_run_force_execution(kernel):
    run_cells(kernel, [f"%%step a\n{mark('a')}x = 1", f"%%step clock --no-cache\n{mark('clock')}y = x + 1",
                       f"%%step c\n{mark('c')}z = y * 2"])
    kale_run(kernel)
    run, ran = kale_run(kernel)
    assert ran == ["clock"]  # its output is the same, so c stays cached
    assert run.steps["clock"].reason == "forced by %%step clock --no-cache"
    run, ran = kale_run(kernel, "--no-cache")
    assert ran == ["a", "clock", "c"]
    assert run.steps["a"].reason == "forced by --no-cache"


def corrupt(folder: Path) -> None:
    data = [p for p in folder.iterdir() if p.name != "kale.json"][0]
    raw = bytearray(data.read_bytes())
    raw[-1] ^= 0xFF
    data.write_bytes(bytes(raw))  # same size: only the checksum can tell


@pytest.mark.parametrize("damage", ["corrupted", "missing"])
def test_damaged_cached_outputs_are_recomputed_with_a_note(kernel, damage):
    import shutil

    after_step = run_cells(kernel, chain(3))
    first, _ = kale_run(kernel)
    folder = first.run_dir / "data" / "s1" / "v1"
    corrupt(folder) if damage == "corrupted" else shutil.rmtree(folder)
    if damage == "missing":  # previews compare records and sizes; a run also hashes the content
        assert "▶ s1  run: cached outputs of run" in cache_check(kernel)
    run, ran = kale_run(kernel)
    assert ran == ["s1"]  # s2's input is recomputed with the same content, so s2 stays cached
    assert damage in run.steps["s1"].reason and "running it again" in run.steps["s1"].reason
    assert run.status == "succeeded" and check(run, after_step) == 3
    assert kale_run(kernel)[1] == []  # the fresh copy is the cache entry now


def test_resume_reuses_what_succeeded_and_runs_the_fixed_step(kernel, capsys):
    kernel.run(f"%%step a --no-cache\n{mark('a')}x = 1", cell_id="c-a")
    kernel.error(f"%%step b\n{mark('b')}y = x / 0", cell_id="c-b")
    kernel.run(f"%%step c\n{mark('c')}z = 5", cell_id="c-c")
    failed, ran = kale_run(kernel)
    assert failed.status == "failed" and ran == ["a", "b"]
    kernel.run(f"%%step b\n{mark('b')}y = x / 2", cell_id="c-b")
    run, ran = kale_run(kernel, "--resume")
    assert ran == ["b", "c"]  # a is --no-cache, yet resume reuses what that run got done
    assert run.steps["a"].status == "cached" and run.steps["a"].cached_from == failed.id
    assert run.steps["b"].reason == f"resumed from run {failed.id}, where it failed" and run.steps["b"].error == ""
    assert f"b succeeded: resumed from run {failed.id}, where it failed" in capsys.readouterr().out
    assert run.status == "succeeded" and run.load("y") == 0.5 and run.load("z") == 5
    named, ran = kale_run(kernel, f"--resume {failed.id} --no-cache")
    assert ran == ["b", "c"]


def test_resume_runs_steps_changed_since_the_failed_run(kernel):
    kernel.run(f"%%step a\n{mark('a')}x = 1", cell_id="c-a")
    kernel.error(f"%%step b\n{mark('b')}y = x / 0", cell_id="c-b")
    failed, _ = kale_run(kernel)
    kernel.run(f"%%step a\n{mark('a')}x = 2", cell_id="c-a")
    kernel.run(f"%%step b\n{mark('b')}y = x / 2", cell_id="c-b")
    run, ran = kale_run(kernel, f"--resume {failed.id}")
    assert ran == ["a", "b"] and run.load("y") == 1.0
    assert run.steps["a"].reason == f"changed since run {failed.id}: the step's code changed"


def test_resume_without_a_failed_run_says_so(kernel):
    kernel.run("%%step a\nx = 1")
    with pytest.raises(KaleError, match="has no failed run to resume"):
        kernel.shell.run_line_magic("kale_run", "--resume")
    with pytest.raises(KaleError, match="--resume nope: no such run"):
        kernel.shell.run_line_magic("kale_run", "--resume nope")


def test_cached_steps_still_report_their_metrics(kernel):
    run_cells(kernel, ["%%step a\nacc = 0.75", "%%step b\nloss = acc / 3", "%%metrics\nacc\nloss"])
    first, _ = kale_run(kernel)
    second, _ = kale_run(kernel)
    assert {s.status for s in second.steps.values()} == {"cached"}
    assert second.metrics == first.metrics == {"acc": 0.75, "loss": 0.25}


def test_cache_only_check_explains_without_running(kernel, capsys):
    run_cells(kernel, PARAMETERS)
    first, _ = kale_run(kernel)
    kernel.run(f"%%step e --after d\n{mark('e')}top = min(shifted)", cell_id="cell-5")
    capsys.readouterr()
    result, ran = kale_run(kernel, "--cache-only-check --param beta=0")
    assert result is None and ran == []
    out = capsys.readouterr().out
    assert "Cache: 3 of 5 steps would be reused" in out
    assert f"↺ a  reuse the result of run {first.id}" in out
    assert "▶ d  run: parameter beta changed (10 -> 0)" in out
    assert "▶ e  run: upstream step 'd' runs first" in out
    kernel.shell.run_line_magic("kale_show", "")
    shown = capsys.readouterr().out
    assert "Cache: 4 of 5 steps would be reused" in shown and "▶ e  run: the step's code changed" in shown


def test_clear_frees_values_but_keeps_history(kernel, capsys):
    run_cells(kernel, chain(3))
    first, _ = kale_run(kernel)
    kale_run(kernel)
    kernel.shell.run_line_magic("kale_cache", "--clear --older-than 1")
    assert "removed 0 cache entries and the saved values of 0 runs" in capsys.readouterr().out
    kernel.shell.run_line_magic("kale_cache", "--clear")
    out = capsys.readouterr().out
    assert "removed 3 cache entries and the saved values of 2 runs" in out
    assert not (first.run_dir / "data").exists() and first.notebook("s0").exists()
    run, ran = kale_run(kernel)
    assert ran == ["s0", "s1", "s2"]


def test_clear_function_for_the_cli(kernel):
    run_cells(kernel, ["%%step a\nx = list(range(1000))"])
    first, _ = kale_run(kernel)
    cleared = cache.clear(KaleDir(Path.cwd()))
    assert (cleared.entries, cleared.runs) == (1, 1) and cleared.freed > 0
    assert cache.clear(KaleDir.containing(Path.cwd() / ".kale")).entries == 0


def test_key_covers_versions(kernel):
    run_cells(kernel, ["%%imports\nimport numpy as np", "%%step a\nx = np.ones(3)", "%%step b\ny = x * 2"])
    plan = kernel.magics.plan()
    records = {"x": {"checksum": "xxh3_128:0", "backend": "numpy"}}
    parts = cache.key_parts(plan, "b", plan.parameters, records)
    import sys

    import numpy

    assert parts["library:numpy"] == numpy.__version__
    assert parts["backend:numpy"].endswith(f"numpy={numpy.__version__}")
    assert parts["python"] == sys.version.split()[0]
    assert cache.explain({**parts, "python": "3.99.0"}, parts) == "the Python version changed"


def test_an_unreadable_cache_index_means_running_again(kernel):
    after_step = run_cells(kernel, chain(2))
    kale_run(kernel)
    first, second = sorted(Path(".kale/cache/entries").glob("*.json"))
    first.write_text("{not json")
    second.write_text('{"key": "other"}')
    run, ran = kale_run(kernel)
    assert ran == ["s0", "s1"] and check(run, after_step) == 2
    assert kale_run(kernel)[1] == []


def test_no_cache_reaches_kfp_and_local_only_options_are_refused(kernel):
    import yaml

    kernel.run("%%step a\nx = 1")
    for flags, cached in (("--no-cache", False), ("", True)):
        run = kernel.run(f"%kale_run --engine kfp --compile-only --no-snapshot {flags}")
        tasks = yaml.safe_load_all(run.pipeline_file.read_text()).__next__()["root"]["dag"]["tasks"]
        assert tasks["a"]["cachingOptions"].get("enableCache", False) is cached
        assert tasks["kale-environment"]["cachingOptions"] == {"enableCache": True}  # a function of its pins
    with pytest.raises(KaleError, match="work with the local engine"):
        kernel.shell.run_line_magic("kale_run", "--host http://127.0.0.1:9 --resume")


@pytest.mark.parametrize("name", ["chain", "diamond", "in-place", "exec and globals()", "ipython magics",
                                  "closure reads a step's global", "pandas"])
def test_core_notebooks_cached_run_gives_the_kernel_values(kernel, name):
    from test_engine_oracle import NOTEBOOKS

    after_step = run_cells(kernel, NOTEBOOKS[name])
    kale_run(kernel)
    run, _ = kale_run(kernel)
    assert {s.status for s in run.steps.values()} == {"cached"}
    assert check(run, after_step) >= 1


def test_a_cache_reason_says_in_words_what_changed():
    from kale_magic.cache.keys import explain

    old = {"backend:numpy": "1;numpy=2.4.5", "library:sklearn": "?", "library:pandas": "2.2.0"}
    new = {"backend:numpy": "1;numpy=2.4.6", "backend:pickle": "5", "library:sklearn": "1.6.1",
           "library:scipy": "1.15.0"}
    reason = explain(new, old)
    assert reason == ("numpy 2.4.5 -> 2.4.6 (it loads the inputs saved in the numpy format); an input is now "
                      "saved in the pickle format; the step no longer imports pandas; the step now imports "
                      "scipy (1.15.0); library sklearn an unknown version -> 1.6.1")
    assert not any(mark in reason for mark in ("?", ";numpy", "none ->", "=2.4"))
