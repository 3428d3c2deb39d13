"""The local engine's schedule, driven directly: no threads, no processes, no run state."""

import pytest

from kale_magic.engines.local.scheduler import Schedule, StepInstance

# load -> clean -> train -> report, and load -> stats (a sibling branch)
DAG = {"load": (), "clean": ("load",), "stats": ("load",), "train": ("clean",), "report": ("train", "stats")}


def names(instances):
    return [str(i) for i in instances]


def test_only_instances_whose_parents_succeeded_are_ready_in_plan_order():
    schedule = Schedule(DAG)
    assert names(schedule.ready()) == ["load"]
    schedule.start(StepInstance("load"))
    assert schedule.ready() == [] and names(schedule.running) == ["load"]
    assert schedule.end(StepInstance("load"), "succeeded") == {}
    assert names(schedule.ready()) == ["clean", "stats"]  # independent: both at once


def test_a_cached_instance_readies_its_children_without_running():
    schedule = Schedule(DAG)
    schedule.end(StepInstance("load"), "cached")
    assert names(schedule.ready()) == ["clean", "stats"]


def test_a_failure_skips_its_pending_descendants_only_and_says_why():
    schedule = Schedule(DAG)
    schedule.end(StepInstance("load"), "succeeded")
    for step in ("clean", "stats"):
        schedule.start(StepInstance(step))
    skipped = schedule.end(StepInstance("clean"), "failed")
    assert {str(i): why for i, why in skipped.items()} == {
        "train": "skipped: upstream step 'clean' failed", "report": "skipped: upstream step 'clean' failed"}
    assert schedule.ready() == [] and names(schedule.running) == ["stats"]  # the sibling goes on
    schedule.end(StepInstance("stats"), "succeeded")
    assert names(schedule.failed) == ["clean"]
    assert {str(i): s for i, s in schedule.status.items()} == {
        "load": "succeeded", "clean": "failed", "stats": "succeeded", "train": "skipped", "report": "skipped"}


def test_cancel_skips_what_has_not_started():
    schedule = Schedule(DAG)
    schedule.end(StepInstance("load"), "succeeded")
    schedule.start(StepInstance("clean"))
    assert set(names(schedule.cancel())) == {"stats", "train", "report"}
    assert names(schedule.running) == ["clean"]  # the executor stops what runs


def test_descendants_follow_every_path():
    assert names(Schedule(DAG).descendants("clean")) == ["train", "report"]
    assert names(Schedule(DAG).descendants("load")) == ["clean", "stats", "train", "report"]


@pytest.mark.parametrize("act", [
    lambda s: s.end(StepInstance("load"), "exploded"),
    lambda s: (s.end(StepInstance("load"), "succeeded"), s.end(StepInstance("load"), "failed")),
    lambda s: (s.start(StepInstance("load")), s.start(StepInstance("load"))),
])
def test_impossible_transitions_are_refused(act):
    with pytest.raises(ValueError):
        act(Schedule(DAG))


def test_an_item_of_a_step_is_an_instance_of_its_own():
    assert str(StepInstance("train", 3)) == "train[3]" and StepInstance("train", 3) != StepInstance("train")
