"""``kale-magic snapshot create|list|restore|diff`` through the parser ``add_parser`` builds."""

from __future__ import annotations

import argparse
import os
import stat
from pathlib import Path

import pytest

from kale_magic.snapshot import SnapshotError
from kale_magic.snapshot.cli import add_parser


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="kale-magic")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def write(root: Path, files: dict[str, str]) -> None:
    for rel, content in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(content)


@pytest.fixture
def two_snapshots(tmp_path, capsys):
    root = tmp_path / "ws"
    write(root, {"a.txt": "one", "gone.txt": "bye", "data/same.csv": "1,2"})
    assert run_cli("snapshot", "--root", str(root), "create") == 0
    first = capsys.readouterr().out.split(":")[0]
    write(root, {"a.txt": "two", "new.txt": "hello"})
    (root / "gone.txt").unlink()
    assert run_cli("snapshot", "--root", str(root), "create") == 0
    second = capsys.readouterr().out.split(":")[0]
    return root, first, second


def test_create_and_list(two_snapshots, capsys):
    root, first, second = two_snapshots
    assert run_cli("snapshot", "--root", str(root), "list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == [first, second]
    assert "3 files" in lines[0] and "3 files" in lines[1]


def test_diff_shows_added_removed_and_changed_files(two_snapshots, capsys):
    root, first, second = two_snapshots
    assert run_cli("snapshot", "--root", str(root), "diff", first, second) == 0
    assert capsys.readouterr().out.splitlines() == ["+ new.txt", "- gone.txt", "M a.txt"]
    assert run_cli("snapshot", "--root", str(root), "diff", second, second) == 0
    assert capsys.readouterr().out == "no differences\n"


def test_restore_writes_writable_copies_of_the_old_version(two_snapshots, tmp_path, capsys):
    root, first, _ = two_snapshots
    dest = tmp_path / "restored"
    assert run_cli("snapshot", "--root", str(root), "restore", first, str(dest)) == 0
    assert capsys.readouterr().out.strip() == str(dest)
    assert {p.relative_to(dest).as_posix(): p.read_text() for p in dest.rglob("*") if p.is_file()} == {
        "a.txt": "one", "gone.txt": "bye", "data/same.csv": "1,2"}
    restored = dest / "a.txt"
    assert stat.S_IMODE(restored.stat().st_mode) & stat.S_IWUSR
    assert restored.stat().st_nlink == 1  # a copy: editing it cannot touch the store
    restored.write_text("edited")
    assert run_cli("snapshot", "--root", str(root), "restore", first, str(tmp_path / "again")) == 0
    assert (tmp_path / "again" / "a.txt").read_text() == "one"


def test_restore_into_a_non_empty_folder_is_refused(two_snapshots, tmp_path):
    root, first, _ = two_snapshots
    with pytest.raises(SnapshotError, match="not an empty folder"):
        run_cli("snapshot", "--root", str(root), "restore", first, str(root))


def test_create_honours_snapshot_max(tmp_path):
    root = tmp_path / "ws"
    write(root, {"big.txt": "x" * 5000})
    with pytest.raises(SnapshotError, match="big.txt .*--snapshot-max"):
        run_cli("snapshot", "--root", str(root), "create", "--snapshot-max", "4K")
    assert run_cli("snapshot", "--root", str(root), "create", "--snapshot-max", "1M") == 0
    assert os.listdir(root / ".kale/snapshots/manifests")


def test_prune_keeps_the_newest_and_the_content_they_share(tmp_path, capsys, monkeypatch):
    from kale_magic.snapshot import list_snapshots, materialize, prune, retention

    root = tmp_path / "ws"
    store = root / ".kale/snapshots"
    ids = []
    for version in ("v1", "v2", "v3"):
        write(root, {"shared.txt": "same in all", "changing.txt": version})
        assert run_cli("snapshot", "--root", str(root), "create") == 0
        ids.append(capsys.readouterr().out.split(":")[0])
    old_run = materialize(store, ids[0], tmp_path / "old-run")  # a run that used the first one

    monkeypatch.setattr(retention, "GRACE_S", -60)  # everything counts as old
    assert run_cli("snapshot", "--root", str(root), "prune", "--keep", "1") == 0
    assert capsys.readouterr().out.startswith("removed 2 snapshots and 2 unshared files")
    assert [s.id for s in list_snapshots(store)] == [ids[2]]
    objects = sorted(p.read_text() for p in (store / "objects").glob("??/*"))
    assert objects == ["same in all", "v3"]
    restored = materialize(store, ids[2], tmp_path / "new-run")
    assert (restored / "changing.txt").read_text() == "v3"
    assert (old_run / "changing.txt").read_text() == "v1"  # hard links keep the data alive
    assert prune(store, 1).snapshots == []


def test_prune_spares_recent_content_of_a_snapshot_in_progress(tmp_path, capsys):
    root = tmp_path / "ws"
    write(root, {"a.txt": "a"})
    assert run_cli("snapshot", "--root", str(root), "create") == 0
    manifest = next((root / ".kale/snapshots/manifests").glob("*.json"))
    manifest.unlink()  # as if its snapshot were still being taken
    assert run_cli("snapshot", "--root", str(root), "prune", "--keep", "0") == 0
    assert [p.read_text() for p in (root / ".kale/snapshots/objects").glob("??/*")] == ["a"]
