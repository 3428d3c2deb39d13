"""Partial runs on the local engine: ``--only``, ``--from``, ``--to``.

What ran is counted through a side channel outside the workspace (``$KALE_TEST_LOG``, as in
test_cache.py), never timed; values are held to the oracle (the kernel's values).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from IPython.core.error import UsageError

from kale_magic.errors import KaleError
from oracle import check, run_cells
from test_cache import kale_run, mark, side_channel  # noqa: F401 (the fixture)

# a -> b -> c -> d, and c also loads a's value directly (a long edge)
CELLS = [
    "%%parameters\nscale = 3",
    f"%%step a\n{mark('a')}xs = list(range(scale))",
    f"%%step b\n{mark('b')}ys = [x * 2 for x in xs]",
    f"%%step c\n{mark('c')}total = sum(ys) + len(xs)",
    f"%%step d\n{mark('d')}report = f'total={{total}}'",
]


def test_only_runs_the_step_and_reuses_what_it_loads(kernel):
    after_step = run_cells(kernel, CELLS)
    full, ran = kale_run(kernel)
    assert ran == ["a", "b", "c", "d"]
    partial, ran = kale_run(kernel, "--only c --no-cache")  # unselected steps are reused all the same
    assert ran == ["c"]
    assert partial.status == "succeeded"
    for name in ("a", "b"):
        step = partial.steps[name]
        assert step.status == "cached" and step.cached_from == full.id
        assert step.reason == f"reused from run {full.id} (not selected)"
    assert partial.steps["c"].status == "succeeded"
    assert partial.steps["d"].status == "skipped"
    assert partial.steps["d"].reason == "not run (not selected: --only c)"
    assert partial.state.tasks["Run"].message == "3 steps succeeded (2 from the cache); 1 not run (not selected)"
    cached, ran = kale_run(kernel, "--only c")  # a selected step obeys the cache, as in any run
    assert ran == [] and cached.steps["c"].reason == f"reused from run {partial.id}"
    assert partial.load("total") == after_step["c"]["total"]
    assert partial.load("xs", step="a") == after_step["a"]["xs"]


def test_from_runs_the_step_and_everything_after_it(kernel):
    after_step = run_cells(kernel, CELLS)
    full, _ = kale_run(kernel)
    run, ran = kale_run(kernel, "--from b --no-cache")
    assert ran == ["b", "c", "d"]
    assert run.steps["a"].cached_from == full.id
    assert check(run, after_step) == 4


def test_to_runs_the_step_and_its_ancestors_only_with_no_earlier_run(kernel):
    after_step = run_cells(kernel, CELLS)
    run, ran = kale_run(kernel, "--to b")
    assert ran == ["a", "b"] and run.status == "succeeded"
    assert [run.steps[n].status for n in "cd"] == ["skipped", "skipped"]
    assert run.load("ys") == after_step["b"]["ys"]
    # what --to made is what --only later reuses
    later, ran = kale_run(kernel, "--only c")
    assert ran == ["c"] and later.steps["b"].cached_from == run.id and later.load("total") == after_step["c"]["total"]


def test_from_and_to_together_run_the_steps_between(kernel):
    run_cells(kernel, CELLS)
    kale_run(kernel)
    run, ran = kale_run(kernel, "--from b --to c --no-cache")
    assert ran == ["b", "c"] and run.steps["d"].status == "skipped"


def test_a_value_nothing_can_supply_is_refused_before_anything_runs(kernel, tmp_path):
    run_cells(kernel, CELLS)
    with pytest.raises(KaleError) as refused:
        kale_run(kernel, "--only c")
    message = str(refused.value)
    assert message.startswith("--only c: step 'c' needs ") and "%kale_run --to " in message
    assert message.count(". ") == 0 and message.endswith(".")
    assert not (tmp_path / ".kale" / "runs").exists() or not any((tmp_path / ".kale" / "runs").iterdir())


def test_a_changed_producer_is_not_reused(kernel):
    run_cells(kernel, CELLS)
    kale_run(kernel)
    kernel.run(f"%%step b\n{mark('b')}ys = [x * 3 for x in xs]", cell_id="cell-2")
    with pytest.raises(KaleError, match=r"--only c: step 'c' needs 'ys' from step 'b', which is not selected and "
                                        r"has no earlier result to reuse \(the step's code changed\); produce it "
                                        r"first with %kale_run --to b"):
        kale_run(kernel, "--only c")
    fixed, ran = kale_run(kernel, "--to b")
    assert ran == ["b"]  # a comes from the cache, as in any run
    run, ran = kale_run(kernel, "--only c")
    assert ran == ["c"] and run.steps["b"].cached_from == fixed.id and run.load("total") == 3 * 3 + 3


def test_a_step_loading_what_a_selected_step_makes_anew_must_be_selected(kernel):
    run_cells(kernel, CELLS)
    kale_run(kernel)
    with pytest.raises(KaleError, match="--only a,c: step 'b' is not selected but loads 'xs', which selected "
                                        "step 'a' makes anew"):
        kale_run(kernel, "--only a,c")


@pytest.mark.parametrize("line, message", [
    ("--only nope", "--only nope: no step named 'nope' in this notebook; the steps are a, b, c, d."),
    ("--from c --to a", "--from c --to a: step 'a' does not come after step 'c'"),
    ("--only a --from b", "--only names the steps to run; leave out --from and --to"),
])
def test_bad_selections_say_which_and_why(kernel, line, message):
    run_cells(kernel, CELLS)
    with pytest.raises(KaleError) as refused:
        kale_run(kernel, line)
    assert str(refused.value).startswith(message)


def test_options_match_exactly(kernel):
    run_cells(kernel, CELLS)
    with pytest.raises(UsageError, match="unrecognized arguments: --fro"):
        kernel.shell.run_line_magic("kale_run", "--fro b")


def test_kale_runs_shows_what_a_partial_run_ran_reused_and_left(kernel):
    run_cells(kernel, CELLS)
    full, _ = kale_run(kernel)
    partial, _ = kale_run(kernel, "--only c --no-cache")
    table = kernel.run("%kale_runs")
    rows = {line.split()[0]: line for line in repr(table).splitlines()[1:]}
    tail = full.id.rsplit("-", 1)[1]
    assert "ran c; a, b reused from run " + tail + "; d not run" in rows[partial.id.rsplit("-", 1)[1]]
    assert "failed" not in rows[partial.id.rsplit("-", 1)[1]]
    assert table.frame.loc[tail, "steps"] == ""  # the whole run's cell is empty


@pytest.mark.slow  # kale-magic run in a subprocess
def test_headless_run_only_reuses_the_earlier_run(tmp_path):
    from cli_helpers import code, kale_magic, write

    log = tmp_path.parent / f"{tmp_path.name}-executions.log"  # a side channel outside the workspace
    mark = f"open({str(log)!r}, 'a').write('{{}}\\n')"
    nb = write(tmp_path / "nb.ipynb", code("%load_ext kale_magic"), code("%%parameters\nn = 3"),
               code("%%step make\n" + mark.format("make") + "\nxs = list(range(n))"),
               code("%%step total\n" + mark.format("total") + "\ntotal = sum(xs)"),
               code("%%step report\n" + mark.format("report") + "\nline = f'{total}'"),
               code("%kale_run"))
    refused = kale_magic("run", nb, "--only", "total", cwd=tmp_path)
    assert refused.returncode == 1 and not log.exists()
    assert ("--only total: step 'total' needs 'xs' from step 'make', which is not selected and has no earlier "
            "result to reuse") in refused.stderr
    first = kale_magic("run", nb, "--to", "total", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert log.read_text().split() == ["make", "total"]
    log.unlink()
    second = kale_magic("run", nb, "--from", "total", "--no-cache", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert log.read_text().split() == ["total", "report"]
    assert "make cached: reused from run" in second.stdout and "(not selected)" in second.stdout
    assert kale_magic("run", nb, "--fro", "total", cwd=tmp_path).returncode == 2  # no prefix matching


# Kubeflow Pipelines, against the test API server -------------------------------------------------------
import s3_server as s3  # noqa: E402

s3_server, s3_env, kfp_default_store = s3.s3_server, s3.s3_env, s3.kfp_default_store  # the fixtures


def test_kfp_to_compiles_and_runs_the_selected_sub_pipeline(kernel, kfp_server, kfp_default_store):
    import yaml

    kfp_server.script_run(dict(state="SUCCEEDED", tasks={"a": "SUCCEEDED", "b": "SUCCEEDED"}))
    run_cells(kernel, CELLS)
    run = kernel.run(f"%kale_run --host {kfp_server.url} --to b")
    assert run.status == "succeeded", run.state.error
    spec = yaml.safe_load_all(kfp_server.spec_of(kfp_server.last_run["pipeline_version_reference"]
                                                 ["pipeline_version_id"]))
    tasks = next(spec)["root"]["dag"]["tasks"]
    assert {"a", "b"} <= set(tasks) and not {"c", "d"} & set(tasks)  # c and d are not in the pipeline
    assert {n: s.status for n, s in run.steps.items()} == {"a": "succeeded", "b": "succeeded",
                                                            "c": "skipped", "d": "skipped"}
    assert run.steps["c"].reason == "not run (not selected: --to b)"
    assert run.state.tasks["Run"].message == "2 steps succeeded; 2 not run (not selected)"


def test_kfp_refuses_a_partial_run_that_needs_an_earlier_value_before_uploading(kernel, kfp_server):
    run_cells(kernel, CELLS)
    with pytest.raises(KaleError, match=r"^--only c: step 'c' needs 'xs' from step 'a', which is not selected; on "
                                        r"Kubeflow Pipelines a partial run imports it from an earlier run's artifacts, "
                                        r"which needs Kfp.pipeline_root set to the object store"):
        kernel.shell.run_line_magic("kale_run", f"--host {kfp_server.url} --only c")
    assert kfp_server.pipelines == {} and kfp_server.runs == {} and kfp_server.requests == []


def upload_outputs(kernel, s3_env, run: dict, steps, prefix: str = "results") -> None:
    """What KFP's launcher does for each step that ran: its outputs (here the kernel's values) under the
    pipeline root, at <root>/<pipeline>/<run id>/<task>/<salt>/<output>/."""
    import tempfile

    from kale_magic import marshal
    from kale_magic.engines.kfp.compiler import Names

    plan = kernel.magics.plan()
    names = Names(plan)
    for name in steps:
        io = Names.io(plan.steps[name])
        for transfer in plan.steps[name].outputs:
            local = Path(tempfile.mkdtemp(prefix="kale-launcher-")) / transfer.name  # not in the workspace
            marshal.save(kernel.ns[transfer.name], local, name=transfer.name)
            for path in local.rglob("*"):
                key = (f"{prefix}/{names.pipeline}/{run['run_id']}/{names.tasks[name]}/salt1/"
                       f"{io[('out', transfer.name)]}/{path.relative_to(local).as_posix()}")
                s3_env.client().upload_file(str(path), s3_env.bucket, key)


def test_kfp_from_imports_the_values_an_earlier_kfp_run_saved(kernel, kfp_server, s3_env, tmp_path):
    import yaml

    run_cells(kernel, CELLS)
    root = f"s3://{s3_env.bucket}/results"
    kernel.run(f"%config Kfp.pipeline_root = {root!r}")
    ran = [["a", "b", "c", "d"], ["b", "c", "d"]]  # the steps each run's pipeline has
    kfp_server.on_run_created(lambda run: upload_outputs(kernel, s3_env, run, ran.pop(0)))
    kfp_server.script_run(dict(state="SUCCEEDED", tasks=dict.fromkeys("abcd", "SUCCEEDED")))
    full = kernel.run(f"%kale_run --host {kfp_server.url}")
    assert full.status == "succeeded", full.state.error
    saved = __import__("json").loads(full.files.remote_values.read_text())["a"]["xs"]

    kfp_server.script_run(dict(state="SUCCEEDED", tasks=dict.fromkeys("bcd", "SUCCEEDED")))
    partial = kernel.run(f"%kale_run --host {kfp_server.url} --from b")
    assert partial.status == "succeeded", partial.state.error
    spec = next(yaml.safe_load_all(kfp_server.spec_of(kfp_server.last_run["pipeline_version_reference"]
                                                      ["pipeline_version_id"])))
    tasks = spec["root"]["dag"]["tasks"]
    assert {"b", "c", "d"} <= set(tasks) and "a" not in tasks  # a is imported, not run
    importers = {name: spec["deploymentSpec"]["executors"][spec["components"][task["componentRef"]["name"]]
                                                           ["executorLabel"]]["importer"]
                 for name, task in tasks.items() if name.startswith("importer")}
    (importer_task, importer), = [(n, i) for n, i in importers.items() if "value 'xs'" in str(i.get("metadata"))]
    assert importer["artifactUri"] == {"constant": saved} and saved.startswith(f"{root}/")  # the root's scheme
    assert not importer.get("reimport") and importer["typeSchema"]["schemaTitle"] == "system.Artifact"
    # b and c load it from the importer: once, shared
    for consumer in ("b", "c"):
        given = tasks[consumer]["inputs"]["artifacts"]["in_xs"]["taskOutputArtifact"]
        assert given == {"outputArtifactKey": "artifact", "producerTask": importer_task}
    step = partial.steps["a"]
    assert step.status == "cached" and step.cached_from == full.id
    assert step.reason == f"reused from run {full.id} (not selected)"
    assert partial.load("xs") == kernel.ns["xs"] and partial.load("report") == kernel.ns["report"]


def test_kfp_partial_run_refuses_a_changed_producer_before_uploading(kernel, kfp_server, s3_env, tmp_path):
    run_cells(kernel, CELLS)
    kernel.run(f"%config Kfp.pipeline_root = 's3://{s3_env.bucket}/results'")
    kfp_server.on_run_created(lambda run: upload_outputs(kernel, s3_env, run, "abcd"))
    kfp_server.script_run(dict(state="SUCCEEDED", tasks=dict.fromkeys("abcd", "SUCCEEDED")))
    full = kernel.run(f"%kale_run --host {kfp_server.url}")
    assert full.status == "succeeded", full.state.error
    kernel.run(f"%%step a\n{mark('a')}xs = list(range(scale + 1))")  # a changed: its saved xs is stale
    versions = len(kfp_server.requests)
    with pytest.raises(KaleError) as refused:
        kernel.shell.run_line_magic("kale_run", f"--host {kfp_server.url} --from b")
    assert str(refused.value) == (
        f"--from b: step 'b' needs 'xs' from step 'a', which is not selected and has no earlier KFP result to reuse "
        f"(its code, parameters or inputs changed since run {full.id}, the latest that ran it); produce it first "
        "with %kale_run --engine kfp --to a.")
    assert len(kfp_server.requests) == versions  # nothing uploaded, nothing run


def test_cache_only_check_is_for_whole_runs(kernel):
    run_cells(kernel, CELLS)
    with pytest.raises(KaleError, match="--cache-only-check shows what a whole run would reuse; leave out --only"):
        kernel.shell.run_line_magic("kale_run", "--cache-only-check --only c")
