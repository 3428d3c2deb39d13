"""Listeners cannot stop a run: a view that raises is detached and reported once, a run store whose
database another connection holds locked catches up afterwards, and Ctrl-C still cancels."""

from __future__ import annotations

import _thread
import sqlite3
import threading

import pytest
from processes import wait_for

from kale_magic.engines.local.engine import LocalEngine
from kale_magic.history.store import RunStore
from kale_magic.plan.planner import Environment
from kale_magic.run.launch import Recording, RunRequest, Workspace, start_run
from kale_magic.run.state import RunState

CELLS = ["%%step make\nxs = list(range(4))", "%%step total\ntotal = sum(xs)"]


def start(kernel, workers, tmp_path, listeners, request=None):
    """``%kale_run``'s road with the given listeners (the panel and the store are listeners like these)."""
    recorded = Recording(kernel.magics.session.ordered(), Environment.of(kernel.ns))
    return start_run(request or RunRequest(no_snapshot=True), Workspace(root=tmp_path), recorded,
                     LocalEngine(workers), listeners=listeners)


class Broken:
    """A view that fails on the first event it hears."""

    view = "the broken view"

    def __init__(self):
        self.calls = 0

    def __call__(self, state, event):
        self.calls += 1
        raise RuntimeError("cannot draw")


def test_a_listener_raising_on_the_first_event_is_reported_once_and_detached(kernel, workers, tmp_path, capfd):
    kernel.cells(*CELLS)
    broken, heard = Broken(), []
    run = start(kernel, workers, tmp_path, [broken, lambda state, event: heard.append(event)])
    assert run.status == "succeeded" and run.load("total") == kernel.ns["total"] == 6
    assert broken.calls == 1  # detached after its first failure
    assert heard[-1] == "finished" and "step:total" in heard  # the other listener heard everything
    (failure,) = run.state.listener_failures
    assert "the broken view" in failure and "RuntimeError: cannot draw" in failure and run.state.run_id in failure
    assert capfd.readouterr().err.count("the broken view stopped following run") == 1


def test_the_state_reports_a_failing_listener_once_even_from_two_threads():
    state = RunState("r1", "demo", "exp", "local", steps=["a", "b"])
    broken = Broken()
    state.subscribe(broken)
    threads = [threading.Thread(target=state.step, args=(name, "running")) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    state.finish("succeeded")
    assert len(state.listener_failures) == 1 and state.status == "succeeded"


def test_a_store_locked_past_its_busy_timeout_does_not_hold_the_run_and_catches_up(kernel, workers, tmp_path,
                                                                                  capfd):
    kernel.cells(*CELLS)
    store = RunStore(tmp_path / "runs.db", timeout=0.2)
    other = sqlite3.connect(tmp_path / "runs.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another kernel's writer that does not let go
    try:
        run = start(kernel, workers, tmp_path, [store.recorder()])
        # the run ended while the database was still locked: it never waited for the store
        assert run.status == "succeeded" and run.load("total") == 6
        assert store.find(run.id) is None  # nothing could be written yet
        said = capfd.readouterr().err
        assert f"is locked by another connection: run {run.id} ended succeeded" in said
        assert "it is written when the lock is released" in said
    finally:
        other.execute("ROLLBACK")
        other.close()
    caught_up = wait_for(lambda: store.find(run.id), timeout=60)
    assert caught_up is not None and caught_up.status == "succeeded"
    assert [(s.name, s.status) for s in caught_up.steps] == [("make", "succeeded"), ("total", "succeeded")]
    store.close()


def test_a_store_that_stays_locked_says_what_it_missed(kernel, workers, tmp_path, capfd, monkeypatch):
    from kale_magic.history import store as store_module

    monkeypatch.setattr(store_module.Recorder, "GIVE_UP", 0.5)
    kernel.cells(*CELLS)
    store = RunStore(tmp_path / "runs.db", timeout=0.2)
    other = sqlite3.connect(tmp_path / "runs.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        run = start(kernel, workers, tmp_path, [store.recorder()])
        assert run.status == "succeeded"
        err = []  # the run's end may also say the store is behind, before or after the writer gives up
        said = wait_for(lambda: next((line for line in (err.append(capfd.readouterr().err) or "".join(err))
                                      .splitlines() if "missed run" in line), None), timeout=60)
        assert f"missed run {run.id}'s changes since '" in said and "database is locked" in said
        assert said.rstrip().endswith("it has no record of the run")
    finally:
        other.execute("ROLLBACK")
        other.close()
    store.close()


def test_ctrl_c_cancels_a_run_whose_listener_failed(kernel, workers, tmp_path):
    kernel.cells("%%imports\nimport time", "%%parameters\nseconds = 0", "%%step wait\ntime.sleep(seconds)\ndone = 1")

    def interrupt_when_running(state, event):
        if event == "step:wait" and state.steps["wait"].status == "running":
            _thread.interrupt_main()  # what Ctrl-C does to the kernel's main thread

    request = RunRequest(no_snapshot=True, params={"seconds": "600"})  # the kernel's run of the cell took 0 s
    run = start(kernel, workers, tmp_path, [Broken(), interrupt_when_running], request)
    assert run.status == "failed" and run.state.error == "the run was cancelled"
    assert run.steps["wait"].status == "failed" and "cancelled" in run.steps["wait"].error
    assert len(run.state.listener_failures) == 1


@pytest.mark.parametrize("event", ["finished", "step:make"])
def test_a_listener_failing_late_still_leaves_the_run_right(kernel, workers, tmp_path, event):
    kernel.cells(*CELLS)

    def fails_at(state, heard):
        if heard == event:
            raise OSError("display closed")

    run = start(kernel, workers, tmp_path, [fails_at])
    assert run.status == "succeeded" and run.state.finished
    assert f"at '{event}'" in run.state.listener_failures[0]
