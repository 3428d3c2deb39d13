"""The local engine's executor and reporter, driven directly: real step processes on the warm worker,
no kernel and no plan."""

import os
import sys
import threading

import nbformat

from kale_magic.engines.local.executor import Ended, Executor, Started
from kale_magic.engines.local.reporter import Reporter
from kale_magic.engines.local.scheduler import StepInstance
from kale_magic.layout import RunDir, StepOutcome
from kale_magic.run.state import RunState
from kale_magic.skips import Skip
from kale_magic.step.job import StepJob


def job(tmp_path, name, *cells):
    notebook = tmp_path / f"{name}.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells]), str(notebook))
    run = RunDir(tmp_path / "run")
    run.make_step_dirs()
    return StepJob(step=name, notebook=str(notebook), run=str(run.path), cwd=str(tmp_path), env=dict(os.environ),
                   sys_path=tuple(sys.path)).to_dict()


def until_idle(executor):
    """Every event until nothing runs (the executor itself bounds each wait)."""
    events = []
    while executor.running:
        events += executor.wait()
    return events


def test_a_step_past_its_timeout_is_killed_and_said_so(workers, tmp_path):
    executor = Executor(workers, {"slow": 0.5, "quick": None}, 4, threading.Event())
    executor.submit(StepInstance("slow"), job(tmp_path, "slow", "import time\ntime.sleep(600)"))
    executor.submit(StepInstance("quick"), job(tmp_path, "quick", "x = 1"))
    events = until_idle(executor)
    ended = {e.instance.step: e for e in events if isinstance(e, Ended)}
    assert ended["slow"].stopped == "step 'slow' ran longer than its --timeout of 0.5 s and was stopped"
    assert ended["slow"].exit_code == -9
    assert ended["quick"].stopped is None and ended["quick"].exit_code == 0
    for name in ("slow", "quick"):  # each instance: forked, then ended
        mine = [type(e) for e in events if e.instance.step == name]
        assert mine == [Started, Ended]


def test_a_cancel_kills_every_running_step(workers, tmp_path):
    cancelled = threading.Event()
    executor = Executor(workers, {}, 2, cancelled)
    for name in ("a", "b"):
        executor.submit(StepInstance(name), job(tmp_path, name, "import time\ntime.sleep(600)"))
    assert executor.full
    started = set()
    while len(started) < 2:
        started |= {e.instance.step for e in executor.wait() if isinstance(e, Started)}
    cancelled.set()
    ended = [e for e in until_idle(executor) if isinstance(e, Ended)]
    assert sorted((e.instance.step, e.stopped) for e in ended) == [("a", "step 'a' was cancelled"),
                                                                   ("b", "step 'b' was cancelled")]
    assert not executor.full


def test_the_reporter_writes_each_step_row_once_in_order(tmp_path):
    state = RunState("r1", "p", "e", "local", steps=["a", "b", "c"])
    report = Reporter(state, RunDir(tmp_path))
    a, b = StepInstance("a"), StepInstance("b")
    report.warming(a, importing=True)
    report.warming(b, importing=True)  # said once a run
    assert state.tasks["Run"].message == "waiting for the warm worker to import the notebook's modules"
    report.started(b)
    assert state.tasks["Run"].message.startswith("waiting")  # b was not the one waiting
    report.started(a)
    assert state.tasks["Run"].message == ""
    assert state.steps["a"].status == "running" and state.steps["a"].log == str(RunDir(tmp_path).log("a"))
    report.ended(a, StepOutcome("succeeded", metrics={"acc": 1.0}), 5.0, "forced by --no-cache", "k1")
    report.ended(b, StepOutcome("failed", error="ZeroDivisionError: division by zero"), 6.0, "a note", None)
    report.skipped({StepInstance("c"): Skip("failure", "skipped: upstream step 'b' failed")})
    steps = state.steps
    assert (steps["a"].status, steps["a"].message, steps["a"].cache_key, steps["a"].started) == (
        "succeeded", "forced by --no-cache", "k1", 5.0)
    assert (steps["b"].status, report.error_of(b)) == ("failed", "ZeroDivisionError: division by zero")
    assert (steps["c"].status, steps["c"].message, steps["c"].skip) == (
        "skipped", "skipped: upstream step 'b' failed", "failure")
    assert state.metrics == {"acc": 1.0}
