"""Snapshots in ``%kale_run``: local steps work in the frozen copy, not the live folder."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from kale_magic.errors import KaleError
from kale_magic.snapshot import list_snapshots


def record_pipeline(kernel, gate: Path) -> None:
    """Step 'read' waits for ``gate`` (so the test can edit files mid-run), then reads files."""
    gate.touch()  # the kernel runs the cells once while recording them
    kernel.cells(
        f"""
        %%step read
        import os, pathlib, time
        while not pathlib.Path({str(gate)!r}).exists():
            time.sleep(0.02)
        import helper
        content = open("data/train.csv").read()
        version = helper.VERSION
        cwd = os.getcwd()
        """,
        """
        %%step use
        seen = (content, version, cwd)
        """,
    )
    gate.unlink()


def test_steps_read_the_files_as_they_were_when_the_run_started(kernel, workspace, tmp_path):
    gate = tmp_path.parent / f"{tmp_path.name}-gate"
    record_pipeline(kernel, gate)
    run = kernel.run("%kale_run --background")

    (workspace / "data/train.csv").write_text("version 2, written during the run\n")
    (workspace / "helper.py").write_text("VERSION = 2\n")
    gate.touch()
    run.wait(120)

    assert run.status == "succeeded", run.state.error
    content, version, cwd = (run.load(name) for name in ("content", "version", "cwd"))
    assert (content, version) == ("version 1\n", 1)
    assert Path(cwd) == run.run_dir / "workspace"
    assert run.state.tasks["Snapshot"].status == "done"
    (snapshot,) = list_snapshots(workspace / ".kale/snapshots")
    assert run.state.tasks["Snapshot"].message.startswith(snapshot.id)
    assert run.links["snapshot"] == str(snapshot.manifest)
    assert snapshot.file_count == 2  # data/train.csv and helper.py; .kale/ is never included


def test_no_snapshot_runs_in_the_live_folder(kernel, workspace, tmp_path):
    gate = tmp_path.parent / f"{tmp_path.name}-gate"
    record_pipeline(kernel, gate)
    gate.touch()
    run = kernel.run("%kale_run --no-snapshot")
    assert run.status == "succeeded", run.state.error
    assert run.load("cwd") == str(workspace)
    assert run.state.tasks["Snapshot"].status == "skipped"
    assert "--no-snapshot" in run.state.tasks["Snapshot"].message
    assert not (workspace / ".kale/snapshots").exists()


def test_from_snapshot_repeats_a_run_on_old_files(kernel, workspace, tmp_path, capsys):
    gate = tmp_path.parent / f"{tmp_path.name}-gate"
    record_pipeline(kernel, gate)
    gate.touch()
    first = kernel.run("%kale_run")
    assert first.status == "succeeded", first.state.error
    (snapshot,) = list_snapshots(workspace / ".kale/snapshots")

    (workspace / "data/train.csv").write_text("version 3\n")
    capsys.readouterr()
    kernel.run("%kale_snapshots")
    assert snapshot.id in capsys.readouterr().out

    again = kernel.run(f"%kale_run --from-snapshot {snapshot.id}")
    assert again.status == "succeeded", again.state.error
    assert again.load("content") == "version 1\n"
    assert "(reused)" in again.state.tasks["Snapshot"].message
    assert kernel.run("%kale_run").load("content") == "version 3\n"


def test_snapshot_over_the_cap_stops_the_run_with_the_fix(kernel, workspace, tmp_path):
    gate = tmp_path.parent / f"{tmp_path.name}-gate"
    record_pipeline(kernel, gate)
    (workspace / "data/big.bin").write_bytes(b"x" * 20_000)
    error = kernel.error("%kale_run --snapshot-max 10K")
    assert isinstance(error, KaleError)
    assert "data/big.bin" in str(error) and "--snapshot-max" in str(error)
    assert not list((workspace / ".kale/runs").glob("*/workspace"))


def test_a_changed_workspace_file_invalidates_cached_steps(kernel, workspace, tmp_path):
    gate = tmp_path.parent / f"{tmp_path.name}-gate"
    record_pipeline(kernel, gate)
    gate.touch()
    assert kernel.run("%kale_run").status == "succeeded"
    again = kernel.run("%kale_run")
    assert {s.status for s in again.state.steps.values()} == {"cached"}  # nothing changed

    (workspace / "data/train.csv").write_text("version 2\n")
    changed = kernel.run("%kale_run")
    assert changed.state.steps["read"].status == "succeeded"  # ran again, on the new file
    assert changed.load("content") == "version 2\n"


def test_the_run_store_records_the_snapshot_id(kernel, workspace, tmp_path):
    from kale_magic.history.store import RunStore

    gate = tmp_path.parent / f"{tmp_path.name}-gate"
    record_pipeline(kernel, gate)
    gate.touch()
    run = kernel.run("%kale_run")
    (snapshot,) = list_snapshots(workspace / ".kale/snapshots")
    with RunStore.for_workspace(workspace) as store:
        (record,) = [r for r in store.runs() if r.run_id == run.id]
    assert record.snapshot_id == snapshot.id


def test_cache_prediction_sees_workspace_changes_without_taking_a_snapshot(kernel, workspace, tmp_path, capsys):
    gate = tmp_path.parent / f"{tmp_path.name}-gate"
    record_pipeline(kernel, gate)
    gate.touch()
    kernel.run("%kale_run")
    capsys.readouterr()
    kernel.run("%kale_run --cache-only-check")
    assert capsys.readouterr().out.startswith("Cache: 2 of 2 steps would be reused")

    (workspace / "data/train.csv").write_text("version 2\n")
    kernel.run("%kale_run --cache-only-check")
    out = capsys.readouterr().out
    assert out.startswith("Cache: 0 of 2 steps would be reused") and "workspace files changed" in out
    assert len(list_snapshots(workspace / ".kale/snapshots")) == 1  # predicting stored nothing
