"""The local engine: processes, concurrency, failures, logs, executed notebooks."""

import json
import os
import re
import subprocess
import sys

import nbformat
import pytest

from kale_magic import marshal
from kale_magic.errors import MarshalError


def run(kernel, line=""):
    return kernel.kale_run(line)


def test_failed_step_fails_the_run_and_skips_only_its_descendants(kernel, capsys):
    kernel.cells("%%step a\nx = 1", "%%step ok --after a\ngood = x + 1")
    kernel.error("%%step bad --after a\nboom = x / 0")
    kernel.run("%%step after_bad --after bad\nz = 1")
    kernel.ns.pop("boom", None)
    before = {k: v for k, v in kernel.ns.items() if not k.startswith("_")}
    result = run(kernel)
    assert result.status == "failed"
    steps = result.steps
    assert steps["a"].status == "succeeded" and steps["ok"].status == "succeeded"
    assert steps["bad"].status == "failed"
    assert steps["bad"].error == "ZeroDivisionError: division by zero"
    assert steps["after_bad"].status == "skipped"
    assert "step 'bad' failed: ZeroDivisionError: division by zero" == result.state.error
    assert "Traceback" in result.state.steps["bad"].traceback and "x / 0" in result.state.steps["bad"].traceback
    out = capsys.readouterr().out
    assert "bad failed: ZeroDivisionError" in out
    after = {k: v for k, v in kernel.ns.items() if not k.startswith("_")}
    assert after.keys() == before.keys() and all(after[k] is before[k] for k in before)  # untouched by the run


def test_independent_steps_run_concurrently(kernel, tmp_path):
    """Each step announces itself and waits for the other: run one after the other, neither would see it."""
    meeting = tmp_path / "meeting"
    meeting.mkdir()
    kernel.cells("%%imports\nimport os, time", "%%parameters\npatience = 0",
                 f"%%functions\ndef meet(me, other):\n    open(os.path.join({str(meeting)!r}, me), 'w').close()\n"
                 "    end = time.monotonic() + patience\n"
                 f"    while time.monotonic() < end and not os.path.exists(os.path.join({str(meeting)!r}, other)):\n"
                 "        time.sleep(0.02)\n"
                 f"    return os.path.exists(os.path.join({str(meeting)!r}, other))",
                 "%%step a --after ''\nmet_a = meet('a', 'b')",
                 "%%step b --after ''\nmet_b = meet('b', 'a')")
    for marker in meeting.iterdir():
        marker.unlink()
    result = run(kernel, "--param patience=120")
    assert (result.load("met_a"), result.load("met_b")) == (True, True)  # each saw the other running


def test_executed_notebook_has_ipython_outputs_and_log_streams(kernel):
    kernel.cells(
        "%%imports\nfrom IPython.display import HTML, display",
        "%%step show\nimport sys\nprint('to stdout')\nprint('to stderr', file=sys.stderr)\n"
        "display(HTML('<b>bold</b>'))\nfiles = !echo from-shell\nvalue = 6 * 7\nvalue")
    result = run(kernel)
    assert result.notebook("show") == result.run_dir / "executed" / "show.ipynb"  # a path, as the README says
    nb = nbformat.read(str(result.notebook("show")), as_version=4)
    roles = [c.metadata["kale"]["role"] for c in nb.cells]
    assert roles == ["unmarshal", "imports", "step", "marshal"]
    outputs = nb.cells[2].outputs
    kinds = [(o.output_type, o.get("name")) for o in outputs]
    assert ("stream", "stdout") in kinds and ("stream", "stderr") in kinds
    html = [o for o in outputs if o.output_type == "display_data"][0]
    assert html.data["text/html"] == "<b>bold</b>"
    result_output = [o for o in outputs if o.output_type == "execute_result"][0]
    assert result_output.data["text/plain"] == "42"
    assert result.load("files") == ["from-shell"]
    log = (result.run_dir / "logs" / "show.log").read_text()
    assert "to stdout" in log and "to stderr" in log and "42" in log


def test_error_output_is_in_the_executed_notebook(kernel):
    kernel.error("%%step a\nraise ValueError('bad value')")
    result = run(kernel)
    nb = nbformat.read(str(result.notebook("a")), as_version=4)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert errors[0].ename == "ValueError" and errors[0].evalue == "bad value"
    assert nb.metadata["kale"]["outcome"]["status"] == "failed"


def test_timeout_stops_a_step(kernel):
    kernel.run("%%step slow --timeout 1\nimport time\nfinished = False")
    kernel.magics.session.cells[next(iter(kernel.magics.session.cells))]  # recorded
    # make the pipeline version of the step slow without waiting in the kernel
    cell = next(iter(kernel.magics.session.cells.values()))
    from dataclasses import replace

    kernel.magics.session.record(replace(cell, source="import time\ntime.sleep(30)\nfinished = True"))
    result = run(kernel)
    assert result.steps["slow"].status == "failed"
    assert "ran longer than its --timeout of 1 s" in result.steps["slow"].error


def test_killed_step_mid_write_leaves_nothing_loadable(kernel):
    kernel.cells(
        "%%functions\nclass Slow:\n    def __reduce__(self):\n        import os, signal\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n",
        "%%step make\nbig = list(range(1000))\nslow = Slow() if False else None",
        "%%step use\nn = len(big)",
    )
    # the pipeline's 'make' saves a value whose pickling kills the process mid-write
    cell = [c for c in kernel.magics.session.cells.values() if c.step == "make"][0]
    from dataclasses import replace

    kernel.magics.session.record(replace(cell, source="big = [Slow()] + list(range(100000))"))
    result = run(kernel)
    assert result.steps["make"].status == "failed"
    assert re.fullmatch(r"step 'make' was killed \(SIGKILL\) before reporting, most likely by the system for "
                        r"using too much memory \(this machine has [0-9.]+ GiB\): make it hold less at once, or "
                        r"give it more with --memory on KFP or a machine with more memory; see its log",
                        result.steps["make"].error)
    assert result.steps["use"].status == "skipped"
    target = result.run_dir / "data" / "make" / "big"
    assert not target.exists()
    with pytest.raises(MarshalError):
        marshal.load(target, name="big", step="make")


def test_parameters_reach_only_the_steps_that_read_them(kernel):
    kernel.cells("%%parameters\nalpha = 1\nbeta = 'b'", "%%step a\nx = alpha", "%%step b\ny = beta * 2")
    result = run(kernel, "--param alpha=5 --param beta=zz")
    assert result.load("x") == 5 and result.load("y") == "zzzz"
    nb_a = nbformat.read(str(result.run_dir / "notebooks" / "a.ipynb"), as_version=4)
    assert nb_a.cells[0].source == "alpha = 5" and nb_a.cells[0].metadata["tags"] == ["parameters"]
    nb_b = nbformat.read(str(result.run_dir / "notebooks" / "b.ipynb"), as_version=4)
    assert nb_b.cells[0].source == "beta = 'zz'"


HOSTILE = ["it's \"quoted\"", "'''triple'''", 'line1\nline2\r\n', "back\\slash\\n", "üñí©ødé ✓ 🎉",
           "\"); import os; os.system('echo pwned') #", "\x00\x1b[31m"]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_parameter_strings_round_trip(kernel, value):
    kernel.run(f"%%parameters\ntext = {value!r}")
    kernel.run("%%step echo\ncopy = text")
    result = run(kernel)
    assert result.load("copy") == value


def test_hostile_param_override(kernel):
    kernel.cells("%%parameters\ntext = 'x'", "%%step echo\ncopy = text")
    result = kernel.shell.run_line_magic("kale_run", """--param "text=a'b\\"c ü \\\\n" """)
    assert result.load("copy") == "a'b\"c ü \\n"


def test_compile_only_writes_notebooks_and_runs_nothing(kernel):
    kernel.cells("%%step a\nx = 1", "%%step b\ny = x")
    result = run(kernel, "--compile-only")
    assert result.status == "compiled"
    assert sorted(p.name for p in (result.run_dir / "notebooks").iterdir()) == ["a.ipynb", "b.ipynb"]
    assert not (result.run_dir / "executed").exists()


def test_background_run_returns_at_once(kernel):
    kernel.cells("%%imports\nimport time", "%%step a\ntime.sleep(0.3)\nx = 1")
    result = run(kernel, "--background")
    assert result.status == "running"
    assert result.wait(30).status == "succeeded"
    assert result.load("x") == 1


def test_run_layout_and_links(kernel):
    kernel.cells("%%step a\nx = 1")
    result = run(kernel)
    assert result.run_dir.parent.name == "runs" and result.run_dir.parent.parent.name == ".kale"
    assert (result.run_dir / "validation.txt").read_text().startswith("Pipeline 'pipeline-")
    outcome = json.loads((result.run_dir / "steps" / "a.json").read_text())
    assert outcome["status"] == "succeeded"
    with pytest.raises(Exception, match="has no step 'zzz'"):
        result.notebook("zzz")
    with pytest.raises(Exception, match="no step of run .* saved 'nothing'"):
        result.load("nothing")


def test_every_step_that_ran_links_its_notebook_and_log_however_quick(kernel):
    """A step may exit before the engine has seen it start (found in CI: a quick step's panel row had
    no links); its row still links the executed notebook and the log.  The race shows on a busy machine,
    so busy processes share the CPUs while the steps run."""
    kernel.cells(*[f"%%step s{i} --after ''\nv{i} = {i}" for i in range(30)])
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() + 2)]
    try:
        result = run(kernel)
    finally:
        for process in busy:
            process.kill()
            process.wait()
    assert result.status == "succeeded"
    for name, step in result.state.steps.items():
        assert step.notebook == str(result.notebook(name)) and os.path.exists(step.notebook), name
        assert step.log == str(result.run_dir / "logs" / f"{name}.log") and os.path.exists(step.log), name


def test_step_notebooks_are_valid_nbformat(kernel):
    kernel.cells("%%parameters\nn = 2", "%%imports\nimport math",
                 "%%step a\nfrom IPython.display import HTML, display\ndisplay(HTML('<i>x</i>'))\nx = math.sqrt(n)\nx")
    kernel.error("%%step b\nprint(x)\nraise ValueError('stop')")
    result = run(kernel)
    for folder in ("notebooks", "executed"):
        for path in (result.run_dir / folder).glob("*.ipynb"):
            nbformat.validate(nbformat.read(str(path), as_version=4))  # raises if not valid v4.5
            assert path.read_text() == nbformat.writes(nbformat.read(str(path), as_version=4)) + "\n"


def test_how_a_process_that_never_reported_ended_is_said():
    from kale_magic.engines.local.engine import died

    assert died("a", -15) == "step 'a' was killed by SIGTERM before reporting; see its log"
    assert died("a", 3) == "step 'a' process died (exit status 3) before reporting; see its log"
    assert "--memory" in died("a", -9) and "(SIGKILL)" in died("a", -9)
