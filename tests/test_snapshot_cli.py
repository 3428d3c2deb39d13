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
