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
    assert {str(i): tuple(why) for i, why in skipped.items()} == {
        "train": ("failure", "skipped: upstream step 'clean' failed"),
        "report": ("failure", "skipped: upstream step 'clean' failed")}
    assert schedule.ready() == [] and names(schedule.running) == ["stats"]  # the sibling goes on
    schedule.end(StepInstance("stats"), "succeeded")
    assert names(schedule.failed) == ["clean"]
    assert {str(i): s for i, s in schedule.status.items()} == {
        "load": "succeeded", "clean": "failed", "stats": "succeeded", "train": "skipped", "report": "skipped"}


def test_cancel_skips_what_has_not_started():
    schedule = Schedule(DAG)
    schedule.end(StepInstance("load"), "succeeded")
    schedule.start(StepInstance("clean"))
    cancelled = schedule.cancel()
    assert set(names(cancelled)) == {"stats", "train", "report"}
    assert {why.kind for why in cancelled.values()} == {"cancel"}
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


# --foreach: item instances ---------------------------------------------------------------------

def _chain():
    """split -> train (foreach) -> check (continues train item by item) -> summary (the lists)."""
    return Schedule({"split": (), "train": ("split",), "check": ("train",), "summary": ("check",)},
                    {"check": ("train",)})


def test_a_foreach_step_expands_into_items_that_are_ready_together():
    s = _chain()
    s.end(StepInstance("split"), "succeeded")
    assert s.ready() == [StepInstance("train")]
    s.expand("train", 3)
    s.expand("check", 3)
    assert s.ready() == [StepInstance("train", i) for i in range(3)]


def test_a_continuing_item_waits_for_its_own_item_only_and_the_fan_in_for_all():
    s = _chain()
    s.end(StepInstance("split"), "succeeded")
    s.expand("train", 3)
    s.expand("check", 3)
    s.start(StepInstance("train", 1))
    s.end(StepInstance("train", 1), "succeeded")
    assert StepInstance("check", 1) in s.ready() and StepInstance("check", 0) not in s.ready()
    for i in (0, 2):
        s.end(StepInstance("train", i), "cached")
    for i in range(3):
        assert StepInstance("summary") not in s.ready()
        s.end(StepInstance("check", i), "succeeded")
    assert s.ready() == [StepInstance("summary")]


def test_a_failed_item_skips_its_continuation_and_the_fan_in_not_the_other_items():
    s = _chain()
    s.end(StepInstance("split"), "succeeded")
    s.expand("train", 2)
    s.expand("check", 2)
    skipped = s.end(StepInstance("train", 0), "failed")
    assert set(skipped) == {StepInstance("check", 0), StepInstance("summary")}
    assert "upstream step 'train[0]' failed" in skipped[StepInstance("summary")].message
    s.end(StepInstance("train", 1), "succeeded")
    assert s.ready() == [StepInstance("check", 1)]


def test_no_items_make_the_step_done_at_once():
    s = _chain()
    s.end(StepInstance("split"), "succeeded")
    s.expand("train", 0)
    s.expand("check", 0)
    assert s.ready() == [StepInstance("summary")]
