"""The SQLite run store: recording, queries, two writer processes, forward migration."""

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from kale_magic.errors import KaleError
from kale_magic.plan.session import RecordedCell
from kale_magic.run.state import RunState
from kale_magic.history.store import MIGRATIONS, SCHEMA_VERSION, RunRecord, RunStore, StepRecord, code_hash, step_hashes

ROOT = Path(__file__).resolve().parents[1]


def hashes_for(cells):
    recorded = [RecordedCell("imports", "import os", "import os", "i", 0)]
    recorded += [RecordedCell("step", code, code, name, i + 1, step=name)
                 for i, (name, code) in enumerate(cells.items())]
    return step_hashes(recorded)


def record_run(store, run_id, experiment="exp", lr=0.1, acc=0.9, train_code="fit(lr)"):
    state = RunState(run_id, "demo", experiment, "local", steps=["load", "train"], parameters={"lr": lr})
    recorder = store.recorder(state, hashes_for({"load": "x = load()", "train": train_code}))
    state.set_ids(yaml_path=f".kale/runs/{run_id}/pipeline.yaml")
    state.task("Compile", "done", YAML=f".kale/runs/{run_id}/pipeline.yaml")
    state.task("Run", "running")
    state.step("load", "running")
    state.step("load", "cached", cached_from="r0")
    state.step("train", "running")
    state.step("train", "succeeded")
    state.add_metrics({"accuracy": acc})
    state.task("Run", "done")
    state.finish("succeeded")
    return recorder


def test_a_run_is_inserted_at_start_and_completed_at_finish(tmp_path):
    store = RunStore.for_workspace(tmp_path)
    assert store.path == tmp_path / ".kale" / "runs.db"
    state = RunState("r1", "demo", "exp", "local", steps=["a"], parameters={"n": 3})
    saves = []
    original = store.save
    store.save = lambda record, **moved: (saves.append(record.status), original(record, **moved))
    store.recorder(state, hashes_for({"a": "y = n * 2"}))
    assert store.get("r1").status == "running"
    for _ in range(20):
        state.step("a", "running")
    state.step("a", "succeeded")
    state.add_metrics({"score": 6})
    state.set_ids(snapshot_id="snap-1", kfp_run_id="kfp-9")
    state.finish("succeeded")
    # written at the start, when the step starts and ends (for --resume after a killed kernel), at the finish
    assert saves == ["running", "running", "running", "succeeded"], "no write on every progress event"
    run = store.get("r1")
    assert (run.status, run.parameters, run.metrics) == ("succeeded", {"n": 3}, {"score": 6})
    assert run.ended >= run.started and (run.snapshot_id, run.kfp_run_id) == ("snap-1", "kfp-9")
    assert run.steps == [StepRecord("a", "succeeded", run.steps[0].duration, None, code_hash(["y = n * 2"]))]
    assert run.steps[0].duration is not None
    assert set(hashes_for({"a": "1"})) == {"a"}, "only steps have code hashes"
    with pytest.raises(TypeError):
        state.set_ids(colour="blue")


def test_a_step_event_writes_its_row_only_and_the_run_reads_back_whole(tmp_path):
    """A step's start or end rewrites its own row (not every step's: thousands of steps stay linear);
    after any sequence of moves, what the store reads back is what a full save would write."""
    import random

    names = [f"s{i}" for i in range(30)]
    state = RunState("r1", "demo", "exp", "local", steps=names)
    with RunStore(tmp_path / "runs.db") as store:
        written = []
        original = store.save
        store.save = lambda record, **moved: (written.append(len(record.steps)), original(record, **moved))
        recorder = store.recorder(state, {})
        chance = random.Random(7)
        for name in chance.sample(names, len(names)):
            state.step(name, "running")
            state.step(name, chance.choice(["succeeded", "failed", "cached"]), message=f"{name} done")
        assert written[0] == len(names) and set(written[1:]) == {1}
        assert store.get("r1").steps == recorder.record(state.snapshot()).steps
        state.finish("failed")
        assert store.get("r1").steps == recorder.record(state.snapshot()).steps


def test_steps_links_and_yaml_are_recorded(tmp_path):
    with RunStore(tmp_path / "runs.db") as store:
        record_run(store, "r1")
        run = store.get("r1")
    assert run.yaml_path == ".kale/runs/r1/pipeline.yaml"
    assert run.links == {"Compile: YAML": ".kale/runs/r1/pipeline.yaml"}
    assert [(s.name, s.status, s.cached_from) for s in run.steps] == [("load", "cached", "r0"),
                                                                      ("train", "succeeded", None)]


def test_queries_by_experiment_last_and_id_prefix(tmp_path):
    store = RunStore(tmp_path / "runs.db")
    for i, experiment in enumerate(["a", "b", "a", "a"]):
        store.save(RunRecord(f"run-{i}-{experiment}", experiment, "p", "local", "succeeded", 100.0 + i))
    assert [r.run_id for r in store.runs()] == ["run-0-a", "run-1-b", "run-2-a", "run-3-a"]
    assert [r.run_id for r in store.runs(experiment="a", last=2)] == ["run-2-a", "run-3-a"]
    assert store.experiments() == ["b", "a"]
    assert store.get("run-1").run_id == "run-1-b"
    with pytest.raises(KaleError, match="No run 'nope'"):
        store.get("nope")
    with pytest.raises(KaleError, match="4 runs match 'run-'"):
        store.get("run-")


WRITER = """
import sys
from kale_magic.run.state import RunState
from kale_magic.history.store import RunStore

store = RunStore(sys.argv[1])
prefix, count = sys.argv[2], int(sys.argv[3])
for i in range(count):
    state = RunState(f"{prefix}-{i}", "demo", prefix, "local", steps=["load", "train"], parameters={"lr": i / 10})
    store.recorder(state)
    for step in ("load", "train"):
        state.step(step, "running")
        state.step(step, "succeeded")
    state.finish("succeeded")
"""


def test_two_processes_writing_at_once(tmp_path):
    """Like two kernels running pipelines: both create the database and write runs concurrently."""
    path = tmp_path / ".kale" / "runs.db"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), name, "40"], env=env,
                                stderr=subprocess.PIPE, text=True) for name in ("k1", "k2")]
    for process in writers:
        _, errors = process.communicate(timeout=120)
        assert process.returncode == 0, errors
    store = RunStore(path)
    runs = store.runs()
    assert len(runs) == 80
    assert {len(r.steps) for r in runs} == {2} and {r.status for r in runs} == {"succeeded"}
    assert [r.parameters["lr"] for r in store.runs(experiment="k2")] == [i / 10 for i in range(40)]
    assert store._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_an_older_schema_is_migrated_forward(tmp_path):
    path = tmp_path / "runs.db"
    old = sqlite3.connect(path)
    old.executescript(MIGRATIONS[0])
    old.execute("PRAGMA user_version = 1")
    old.execute("INSERT INTO runs (run_id, experiment, pipeline, engine, status, started, ended, parameters,"
                " metrics) VALUES ('old', 'exp', 'p', 'local', 'succeeded', 1.0, 2.0, '{\"lr\": 0.5}',"
                " '{\"acc\": 0.7}')")
    old.execute("INSERT INTO steps (run_id, name, position, status, duration) VALUES ('old', 'a', 0,"
                " 'succeeded', 1.0)")
    old.commit()
    old.close()

    store = RunStore(path)
    assert store.version == SCHEMA_VERSION > 1
    run = store.get("old")
    assert (run.parameters, run.metrics, run.duration) == ({"lr": 0.5}, {"acc": 0.7}, 1.0)
    assert run.steps == [StepRecord("a", "succeeded", 1.0, None, None, "")]
    record_run(store, "new")
    assert [r.run_id for r in store.runs()] == ["old", "new"]


def test_a_newer_schema_is_refused_with_a_clear_message(tmp_path):
    path = tmp_path / "runs.db"
    RunStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(KaleError, match="newer kale-magic"):
        RunStore(path)


def test_kfp_ids_and_yaml_are_recorded_from_the_state_not_its_links(tmp_path):
    ui = "http://127.0.0.1:8080/#"
    store = RunStore(tmp_path / "runs.db")
    state = RunState("r-kfp", "demo", "exp", "kfp", steps=["train"])
    store.recorder(state)
    state.set_ids(yaml_path=str(tmp_path / "demo.yaml"))
    state.task("Compile", "done", pipeline=str(tmp_path / "demo.yaml"))
    links = {"experiment": f"{ui}/experiments/details/e1", "pipeline": f"{ui}/pipelines/details/p1/version/v7"}
    state.set_ids(kfp_experiment_id="e1", kfp_pipeline_id="p1", kfp_version_id="v7")
    state.add_links(**links)
    state.task("Upload", "done", **links)
    state.set_ids(kfp_run_id="kfp-123")
    state.add_links(run=f"{ui}/runs/details/not-the-id")  # links are for display only
    state.step("train", "succeeded", links={"KFP run": f"{ui}/runs/details/not-the-id"})
    state.finish("succeeded")
    run = store.get("r-kfp")
    assert (run.kfp_run_id, run.kfp_pipeline_id, run.kfp_version_id, run.kfp_experiment_id) == (
        "kfp-123", "p1", "v7", "e1")
    assert run.yaml_path == str(tmp_path / "demo.yaml") and run.links["run"] == f"{ui}/runs/details/not-the-id"


def test_a_dead_kernels_run_reads_interrupted_in_its_engines_words_without_asking_the_registry(tmp_path):
    from kale_magic import engines
    from kale_magic.extension.magics import Kale
    from kale_magic.history import store as store_module
    from kale_magic.run.launch import RunRequest

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(gone.stdout)
    store = RunStore.for_workspace(tmp_path)
    for run_id, engine, recorder in (("r-kfp", "kfp", Kale._recorder(store, RunRequest(engine="kfp"), [])),
                                     ("r-local", "local", Kale._recorder(store, RunRequest(engine="local"), [])),
                                     ("r-old", "kfp", store.recorder())):  # recorded before the words were kept
        if run_id == "r-old":
            assert "interrupted" not in recorder.owner
        else:  # the words name this process; as if a kernel that has ended had recorded the run
            assert str(os.getpid()) in recorder.owner["interrupted"]
            recorder.owner["interrupted"] = recorder.owner["interrupted"].replace(str(os.getpid()), str(dead_pid))
        recorder.owner.update(pid=dead_pid, started="")
        state = RunState(run_id, "demo", "exp", engine, steps=["a"])
        state.step("a", "running")
        store.save(recorder.record(state.snapshot()))  # what the recorder's writer thread writes
    store.close()

    def no_registry(name):
        raise AssertionError(f"the run store asked the engine registry for {name!r}")

    engines_get, engines.get = engines.get, no_registry
    try:
        with RunStore.for_workspace(tmp_path) as reopened:  # opening it marks the dead kernel's runs
            errors = {r.run_id: (r.status, r.error) for r in reopened.runs()}
    finally:
        engines.get = engines_get
    assert errors["r-kfp"] == ("interrupted", engines_get("kfp").interrupted(dead_pid))
    assert "may go on in Kubeflow Pipelines" in errors["r-kfp"][1]
    assert errors["r-local"] == ("interrupted", store_module.interrupted(dead_pid))
    assert errors["r-old"] == ("interrupted", store_module.interrupted(dead_pid))
