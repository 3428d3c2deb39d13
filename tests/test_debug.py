"""``%kale_debug``: the kernel gets exactly what a step received in a run (the oracle: the kernel's values
just before the step's cells ran), or what it produced; refusals leave the kernel as it was."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import s3_server as s3
from IPython.core.error import UsageError
from oracle import values_equal

from kale_magic.errors import KaleError

s3_server, s3_env = s3.s3_server, s3.s3_env  # the fixtures

# b sorts a's list in place: c receives b's version, not a's; c fails on it (in the kernel too).
MUTATED = ["%%parameters\noffset = 1", "%%step a\ndata = [3, 1, 2]", "%%step b\ndata.sort()\nn = len(data)",
           "%%step c\nscale = 2\nfirst = data[0] * scale / (data[0] - offset)"]


def run_failing(kernel):
    """Run MUTATED in the kernel (c fails there as in the run); the kernel's values just before c ran."""
    for source in MUTATED[:3]:
        kernel.run(source)
    before_c = copy.deepcopy({n: kernel.ns[n] for n in ("data", "n", "offset")})
    kernel.error(MUTATED[3])
    run = kernel.kale_run()
    assert run.status == "failed" and run.steps["c"].status == "failed"
    return run, before_c


def test_failed_loads_what_the_failing_step_received_and_its_failing_line(kernel, capsys):
    run, before_c = run_failing(kernel)
    kernel.ns.update(data=None, offset=None)  # what the kernel holds now must not matter
    capsys.readouterr()
    kernel.run("%kale_debug --failed")
    out = capsys.readouterr().out
    assert kernel.ns["data"] == before_c["data"] == [1, 2, 3]  # b's in-place change, not a's [3, 1, 2]
    assert kernel.ns["offset"] == before_c["offset"] == 1
    assert f"loaded what step 'c' received in run {run.id}" in out
    assert re.search(rf"data\s+list\s+\S+ B\s+b\s+{run.id}", out), out
    assert re.search(rf"offset\s+int\s+—\s+%%parameters\s+{run.id}", out), out
    assert "error: ZeroDivisionError: division by zero" in out
    assert "failing line: cell 1 of step 'c', line 2: first = data[0] * scale / (data[0] - offset)" in out
    # and the step's code now fails in the kernel as it did in the run
    with pytest.raises(ZeroDivisionError):
        exec("scale = 2\nfirst = data[0] * scale / (data[0] - offset)", dict(kernel.ns))


def test_a_step_and_its_outputs_from_a_named_run(kernel, capsys):
    first, _ = run_failing(kernel)
    kernel.run("%%step c\nscale = 2\nfirst = data[0] * scale")  # fixed
    second = kernel.run("%kale_run")
    assert second.status == "succeeded"
    kernel.ns.update(data=None, n=None)
    kernel.run(f"%kale_debug b --run {first.id} --outputs")
    assert kernel.ns["data"] == [1, 2, 3] and kernel.ns["n"] == 3
    kernel.run("%kale_debug b")  # the latest run that ran it: b is cached in the second run
    assert kernel.ns["data"] == [3, 1, 2]  # what b received, from a
    assert f"received in run {first.id}" in capsys.readouterr().out


@pytest.mark.parametrize("line, refusal", [
    ("c --run {skipped}", "step 'c' never ran in run {skipped} (it skipped: skipped: upstream step 'b' failed)"),
    ("zzz", "step 'zzz' never ran in a run of"),
    ("c --run {skipped} --outputs", "step 'c' produced nothing in run {skipped} (it skipped"),
    ("", "%kale_debug needs a step"),
])
def test_a_step_that_never_ran_is_refused_in_one_sentence(kernel, line, refusal):
    kernel.cells("%%step a\nx = 1",  # b fails in the run only: BOOM is set in its process, not in the kernel
                 "%%step b --env BOOM=1\nimport os\ny = x + 1\n"
                 "if os.environ.get('BOOM'):\n    raise RuntimeError('boom')",
                 "%%step c\nz = y * 2")
    run = kernel.kale_run()
    assert run.steps["c"].status == "skipped"
    kernel.ns["x"] = "kept"
    error = kernel.error(f"%kale_debug {line.format(skipped=run.id)}")
    assert isinstance(error, KaleError) and refusal.format(skipped=run.id) in str(error), str(error)
    assert "\n" not in str(error) and kernel.ns["x"] == "kept"


def test_a_run_whose_values_were_cleaned_is_refused(kernel):
    run, _ = run_failing(kernel)
    kernel.run("%kale_cache --clear")
    kernel.ns["data"] = "kept"
    error = kernel.error("%kale_debug --failed")
    assert isinstance(error, KaleError)
    assert str(error) == (f"run {run.id}'s values were cleaned (%kale_cache --clear deleted 'data' of step 'b'); "
                          "run the pipeline again (%kale_run) to debug step 'c'.")
    assert kernel.ns["data"] == "kept"


def test_a_cached_step_points_at_the_run_that_ran_it(kernel):
    kernel.cells("%%step a\nx = [1]", "%%step b\ny = x + [2]")
    first = kernel.run("%kale_run")
    second = kernel.run("%kale_run")
    assert second.steps["b"].status == "cached"
    error = kernel.error(f"%kale_debug b --run {second.id}")
    assert f"its result was reused from run {first.id}; debug that run (--run {first.id})" in str(error)


def test_debug_options_match_exactly(kernel):
    error = kernel.error("%kale_debug --fail")
    assert isinstance(error, UsageError) and "unrecognized arguments: --fail" in str(error)


def test_a_kfp_run_is_debugged_through_the_object_store(kernel, s3_env, tmp_path, monkeypatch):
    """The fake cluster saves each step's outputs where KFP's launcher does, in a real S3 server; the
    kernel's %kale_debug downloads what step 'total' received."""
    from kfp_api_server import FakeKfpServer

    from kale_magic import marshal
    from kale_magic.engines.kfp.compiler import Names

    for var in ("KF_PIPELINES_ENDPOINT", "KF_PIPELINES_UI_ENDPOINT", "KF_PIPELINES_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(tmp_path / "no-token"))
    kernel.cells("%%parameters\nn = 4", "%%step load\ndata = {'rows': list(range(n))}",
                 "%%step total\ntotal = sum(data['rows'])")
    root = f"s3://{s3_env.bucket}/results"
    kernel.run(f"%config Kale.pipeline_root = {root!r}")
    expected = copy.deepcopy(kernel.ns["data"])
    with FakeKfpServer() as server:
        def cluster(run):
            plan = kernel.magics.plan()
            names = Names(plan)
            for name, step in plan.steps.items():
                io = Names.io(step)
                for transfer in step.outputs:
                    local = tmp_path / "launcher" / name / transfer.name
                    marshal.save(kernel.ns[transfer.name], local, name=transfer.name)
                    for path in local.rglob("*"):
                        key = (f"results/{names.pipeline}/{run['run_id']}/{names.tasks[name]}/salt1/"
                               f"{io[('out', transfer.name)]}/{path.relative_to(local).as_posix()}")
                        s3_env.client().upload_file(str(path), s3_env.bucket, key)

        server.on_run_created(cluster)
        server.script_run(dict(state="SUCCEEDED", tasks={"load": "SUCCEEDED", "total": "SUCCEEDED"}))
        run = kernel.run(f"%kale_run --host {server.url} --no-snapshot")
    assert run.status == "succeeded", run.state.error
    kernel.ns["data"] = None
    kernel.run("%kale_debug total")
    assert kernel.ns["data"] == expected
    assert (run.run_dir / "data" / "load" / "data" / "kale.json").is_file()  # downloaded into the run's folder
    kernel.ns["n"] = None
    kernel.run("%kale_debug load")
    assert kernel.ns["n"] == 4


def test_failed_on_kfp_prints_the_failing_line_from_the_pods_log(kernel, s3_env, tmp_path, monkeypatch, capsys):
    """The fake cluster saves a's and b's outputs where KFP's launcher does and fails c with the log its
    pod prints (the step runtime's traceback, then the component's RuntimeError)."""
    from kfp_api_server import FakeKfpServer

    from kale_magic import marshal
    from kale_magic.engines.kfp.compiler import Names

    for var in ("KF_PIPELINES_ENDPOINT", "KF_PIPELINES_UI_ENDPOINT", "KF_PIPELINES_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(tmp_path / "no-token"))
    for source in MUTATED[:3]:
        kernel.run(source)
    before_c = copy.deepcopy({n: kernel.ns[n] for n in ("data", "n", "offset")})
    kernel.error(MUTATED[3])
    root = f"s3://{s3_env.bucket}/results"
    kernel.run(f"%config Kale.pipeline_root = {root!r}")
    kernel.run("%config Kale.stop_on_failure = False")
    log = ("running step c\n" + "-" * 75 + "\nZeroDivisionError                         Traceback (most recent call "
           "last)\nCell In[3], line 2\n      1 scale = 2\n----> 2 first = data[0] * scale / (data[0] - offset)\n\n"
           "ZeroDivisionError: division by zero\nTraceback (most recent call last):\n  File \"component.py\"\n"
           "RuntimeError: step 'c' failed: ZeroDivisionError: division by zero\n")
    with FakeKfpServer() as server:
        def cluster(run):
            plan = kernel.magics.plan()
            names = Names(plan)
            for name in ("a", "b"):
                step = plan.steps[name]
                io = Names.io(step)
                for transfer in step.outputs:
                    local = tmp_path / "launcher" / name / transfer.name
                    marshal.save(before_c[transfer.name] if name == "b" else [3, 1, 2], local, name=transfer.name)
                    for path in local.rglob("*"):
                        key = (f"results/{names.pipeline}/{run['run_id']}/{names.tasks[name]}/salt1/"
                               f"{io[('out', transfer.name)]}/{path.relative_to(local).as_posix()}")
                        s3_env.client().upload_file(str(path), s3_env.bucket, key)

        server.on_run_created(cluster)
        server.script_run(dict(state="FAILED", tasks={"a": "SUCCEEDED", "b": "SUCCEEDED", "c": ("FAILED", log)}))
        run = kernel.run(f"%kale_run --host {server.url} --no-snapshot")
    assert run.status == "failed" and run.steps["c"].error == "ZeroDivisionError: division by zero"
    assert run.notebook("c").is_file()  # the compiled step notebook the failing line is read from
    kernel.ns.update(data=None, offset=None)
    capsys.readouterr()
    kernel.run("%kale_debug --failed")
    out = capsys.readouterr().out
    assert kernel.ns["data"] == before_c["data"] == [1, 2, 3] and kernel.ns["offset"] == 1
    assert "failing line: cell 1 of step 'c', line 2: first = data[0] * scale / (data[0] - offset)" in out


# inv loops over xs; its item 1 fails in the run only (a file the kernel did not see); again continues inv
# item by item; join reads every item's z as a list
LOOPING = ["%%imports\nimport os", "%%parameters\nxs = [1, 0, 2]\nk = 3", "%%step mk\nbase = [10.0]",
           "%%step inv --foreach x in xs\ny = base[0] / x if x or os.path.exists('boom') else 0.0",
           "%%step again --foreach x in xs\nz = y * k + x", "%%step join\ntotal = sum(z)"]


def run_looping(kernel, tmp_path):
    """Run LOOPING in the kernel, then on the engine with inv's item 1 failing; the kernel's values."""
    kernel.cells(*LOOPING)
    seen = copy.deepcopy({n: kernel.ns[n] for n in ("xs", "k", "base", "y", "z")})
    (tmp_path / "boom").write_text("item 1 of inv fails in the run")
    run = kernel.kale_run()
    assert [i.status for i in run.state.steps["inv"].items] == ["succeeded", "failed", "succeeded"]
    return run, seen


def test_failed_on_a_foreach_step_loads_the_failed_items_inputs_and_item(kernel, tmp_path, capsys):
    run, seen = run_looping(kernel, tmp_path)
    kernel.ns.update(x=None, base=None, xs=None)
    capsys.readouterr()
    kernel.run("%kale_debug --failed")
    out = capsys.readouterr().out
    assert f"loaded what step 'inv[1]' received in run {run.id}" in out
    assert values_equal(kernel.ns["base"], seen["base"]) and kernel.ns["xs"] == seen["xs"]
    assert kernel.ns["x"] == seen["xs"][1] == 0
    assert re.search(rf"x\s+int\s+—\s+item 1 of xs\s+{run.id}", out), out
    assert "error: ZeroDivisionError: float division by zero" in out
    assert "failing line: cell 1 of step 'inv[1]', line 1: y = base[0] / x if x or os.path.exists('boom') else 0.0" in out
    with pytest.raises(ZeroDivisionError):  # the item's code fails in the kernel as it did in the run
        exec(LOOPING[3].split("\n", 1)[1], {"os": __import__("os"), **kernel.ns})


def test_a_foreach_steps_item_loads_its_own_values_and_a_fan_in_loads_every_items(kernel, tmp_path):
    failed, seen = run_looping(kernel, tmp_path)
    kernel.ns["k"] = "kept"
    error = kernel.error("%kale_debug again")  # which item? refused, naming them and the option
    assert isinstance(error, KaleError) and "\n" not in str(error) and kernel.ns["k"] == "kept"
    assert str(error) == (f"step 'again' ran once per item of 'xs' in run {failed.id} (items: 0 succeeded, "
                          "2 succeeded); name one: %kale_debug again --item I loads that item's inputs and x.")
    assert str(kernel.error(f"%kale_debug inv --item 1 --run {failed.id} --outputs")) == (
        f"item 1 of step 'inv' never produced outputs in run {failed.id} (it failed; items: 0 succeeded, 1 failed, "
        "2 succeeded); name another with --item.")
    assert "has no item 7 in run" in str(kernel.error("%kale_debug inv --item 7"))
    assert str(kernel.error("%kale_debug mk --item 0")) == "step 'mk' has no --foreach, so it has no items; leave out --item."
    (tmp_path / "boom").unlink()
    run = kernel.kale_run("--no-cache")
    assert run.status == "succeeded"
    for i in range(3):
        kernel.ns.update(y=None, x=None, k=None)
        kernel.run(f"%kale_debug again --item {i}")
        assert values_equal(kernel.ns["y"], seen["y"][i]) and kernel.ns["x"] == seen["xs"][i] and kernel.ns["k"] == 3
        kernel.run(f"%kale_debug again --item {i} --outputs")
        assert values_equal(kernel.ns["z"], seen["z"][i])
    kernel.ns["z"] = None
    kernel.run("%kale_debug join")  # every item's z, as the list the step loaded
    assert values_equal(kernel.ns["z"], seen["z"]) and len(seen["z"]) == 3


DEMOS = Path(__file__).resolve().parents[1] / "demo_notebooks"


@pytest.mark.slow
@pytest.mark.parametrize("demo", ["quickstart", "sklearn_digits", "pytorch_mlp"])
def test_the_demo_notebooks_debug_inputs_equal_the_kernels_values(kernel, tmp_path, demo):
    """Run the demo cell by cell, copying the kernel's values just before each step's first cell; then
    %kale_debug every step that loads something: each value equals the copy."""
    import shutil

    import nbformat

    if demo == "pytorch_mlp":
        pytest.importorskip("torch")
    for extra in DEMOS.iterdir():
        if extra.is_file() and extra.suffix != ".ipynb":
            shutil.copy(extra, tmp_path / extra.name)
    nb = nbformat.read(DEMOS / f"{demo}.ipynb", as_version=4)
    before: dict[str, dict] = {}
    for cell in nb.cells:
        if cell.cell_type != "code" or not cell.source.strip() or cell.source.lstrip().startswith("%kale"):
            continue
        match = re.match(r"%%step\s+(\S+)", cell.source.strip())
        if match and match.group(1) not in before:
            before[match.group(1)] = {k: _copy(v) for k, v in kernel.ns.items() if not k.startswith("_")}
        kernel.run(cell.source, cell_id=cell.id)
    run = kernel.run("%kale_run --no-cache")
    assert run.status == "succeeded", run.state.error
    checked = 0
    for name, step in run.plan.steps.items():
        wanted = [t.name for t in step.inputs] + list(step.parameters)
        if not wanted:
            continue
        for variable in wanted:
            kernel.ns.pop(variable, None)
        kernel.run(f"%kale_debug {name}")
        for variable in wanted:
            assert same(kernel.ns[variable], before[name][variable]), (demo, name, variable)
            checked += 1
    assert checked >= 2


def same(a, b) -> bool:
    """The oracle's equality, extended to tensors, torch modules and fitted estimators (same state)."""
    import pickle

    kind = type(a).__module__.split(".")[0]
    if kind == "torch":
        import torch

        if isinstance(a, torch.nn.Module):
            return type(a) is type(b) and all(same(x, y) for x, y in zip(a.state_dict().values(),
                                                                          b.state_dict().values()))
        return type(a) is type(b) and a.dtype == b.dtype and torch.equal(a, b)
    if kind == "sklearn":  # attribute by attribute: a whole pickle's memo differs with shared references
        return type(a) is type(b) and vars(a).keys() == vars(b).keys() and all(
            pickle.dumps(value) == pickle.dumps(vars(b)[key]) for key, value in vars(a).items())
    return values_equal(a, b)


def _copy(value):
    try:
        return copy.deepcopy(value)
    except Exception:
        return value
