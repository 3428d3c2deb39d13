"""Workspace snapshots: manifests, dedupe, ignore rules, hash cache, faults, materialize."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kale_magic.snapshot import SnapshotError, list_snapshots, materialize, take_snapshot
from kale_magic.snapshot.manifest import object_name
from kale_magic.snapshot.objects import ObjectStore

OLD = time.time() - 3600  # older than the hash cache's "racy" window


def make_tree(root: Path, files: dict[str, str | bytes], age: float | None = OLD) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
        if age is not None:
            os.utime(path, (age, age))
    return root


def snap(root: Path, **options):
    return take_snapshot(root, root / ".kale" / "snapshots", **options)


def manifest(snapshot) -> dict:
    return json.loads(snapshot.manifest.read_text())


def paths(snapshot) -> list[str]:
    return [entry["path"] for entry in manifest(snapshot)["files"]]


def object_files(root: Path) -> list[Path]:
    return [p for p in (root / ".kale/snapshots/objects").rglob("*") if p.is_file() and p.parent.name != "tmp"]


@pytest.fixture
def file_tree(tmp_path):
    return make_tree(tmp_path / "ws", {
        "train.py": "print('train')\n",
        "data/train.csv": "a,b\n1,2\n",
        "data/copy.csv": "a,b\n1,2\n",
        "notes/readme.md": "# notes\n",
    })


def test_manifest_lists_files_with_size_mode_and_hash(file_tree):
    snapshot = snap(file_tree)
    data = manifest(snapshot)
    entries = {e["path"]: e for e in data["files"]}
    assert sorted(entries) == ["data/copy.csv", "data/train.csv", "notes/readme.md", "train.py"]
    assert entries["train.py"]["size"] == len("print('train')\n")
    assert entries["train.py"]["mode"] == stat.S_IMODE(os.stat(file_tree / "train.py").st_mode)
    import xxhash
    assert entries["train.py"]["xxh3_128"] == xxhash.xxh3_128(b"print('train')\n").hexdigest()
    assert data["format"] == 2
    assert data["dirs"] == ["data", "notes"]
    assert snapshot.file_count == 4 and snapshot.total_bytes == sum(e["size"] for e in entries.values())
    assert snapshot.manifest == file_tree / ".kale/snapshots/manifests" / f"{snapshot.id}.json"
    assert [s.id for s in list_snapshots(file_tree / ".kale/snapshots")] == [snapshot.id]


def test_identical_content_is_stored_once_and_objects_are_read_only(file_tree):
    first = snap(file_tree)
    objects = object_files(file_tree)
    assert len(objects) == 3  # train.csv and copy.csv share one object
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o444 for p in objects)
    assert first.new_bytes == first.total_bytes - len("a,b\n1,2\n")

    (file_tree / "train.py").write_text("print('train v2')\n")
    second = snap(file_tree)
    assert second.id != first.id
    assert len(object_files(file_tree)) == 4  # only the changed file added content
    assert second.new_bytes == len("print('train v2')\n")


def test_ignore_rules_from_gitignore_and_kaleignore(tmp_path):
    root = make_tree(tmp_path / "ws", {
        ".gitignore": "*.log\nbuild/\n/secret.txt\n",
        ".kaleignore": "data/raw/\n!keep.log\n",
        "main.py": "x", "debug.log": "x", "keep.log": "x", "secret.txt": "x",
        "sub/secret.txt": "kept: the rule is anchored to the root",
        "build/out.bin": "x", "data/raw/huge.csv": "x", "data/clean.csv": "x",
        "pkg/.gitignore": "generated.py\n", "pkg/generated.py": "x", "pkg/mod.py": "x",
        ".git/HEAD": "x", "__pycache__/m.pyc": "x", ".ipynb_checkpoints/nb.ipynb": "x",
        ".kale/runs/r1/log.txt": "x",
    })
    assert paths(snap(root)) == [".gitignore", ".kaleignore", "data/clean.csv", "keep.log", "main.py",
                                 "pkg/.gitignore", "pkg/mod.py", "sub/secret.txt"]


def count_ingests(monkeypatch) -> list[str]:
    read = []
    original = ObjectStore.ingest

    def counting(self, source):
        read.append(Path(source).name)
        return original(self, source)

    monkeypatch.setattr(ObjectStore, "ingest", counting)
    return read


def test_unchanged_resnapshot_reads_no_content(file_tree, monkeypatch):
    first = snap(file_tree)
    read = count_ingests(monkeypatch)
    second = snap(file_tree)
    assert read == []
    assert paths(second) == paths(first)
    assert manifest(second)["files"] == manifest(first)["files"]


def test_changed_file_is_the_only_one_read_again(file_tree, monkeypatch):
    snap(file_tree)
    read = count_ingests(monkeypatch)
    make_tree(file_tree, {"data/train.csv": "a,b\n3,4\n"})
    snapshot = snap(file_tree)
    assert read == ["train.csv"]
    entry = next(e for e in manifest(snapshot)["files"] if e["path"] == "data/train.csv")
    assert (ObjectStore(file_tree / ".kale/snapshots/objects").path(object_name(entry)).read_text()
            == "a,b\n3,4\n")


def test_recently_modified_file_is_not_trusted_to_the_cache(tmp_path, monkeypatch):
    root = make_tree(tmp_path / "ws", {"fresh.txt": "v1"}, age=None)  # mtime: now
    snap(root)
    read = count_ingests(monkeypatch)
    snap(root)
    assert read == ["fresh.txt"]  # a same-tick rewrite would be invisible to (size, mtime)


def test_materialized_copy_keeps_the_snapshot_version_while_the_user_edits(file_tree, tmp_path):
    snapshot = snap(file_tree)
    dest = materialize(file_tree / ".kale/snapshots", snapshot.id, tmp_path / "run" / "workspace")

    (file_tree / "data/train.csv").write_text("overwritten in place\n")
    replacement = file_tree / "data/new.csv"
    replacement.write_text("replaced by rename\n")
    os.replace(replacement, file_tree / "data/copy.csv")

    script = "print(open('data/train.csv').read() + open('data/copy.csv').read(), end='')"
    seen = subprocess.run([sys.executable, "-c", script], cwd=dest, capture_output=True, text=True, check=True)
    assert seen.stdout == "a,b\n1,2\n" * 2
    info = (dest / "data/train.csv").stat()
    assert stat.S_IMODE(info.st_mode) == 0o444 and info.st_nlink >= 2  # hard link to the object


def test_materialize_refuses_a_non_empty_destination_and_leaves_no_partial_tree(file_tree, tmp_path):
    snapshot = snap(file_tree)
    dest = tmp_path / "busy"
    dest.mkdir()
    (dest / "x").write_text("x")
    with pytest.raises(SnapshotError, match="not an empty folder"):
        materialize(file_tree / ".kale/snapshots", snapshot.id, dest)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".busy")] == []


def test_executable_files_keep_their_mode_when_materialized(tmp_path):
    root = make_tree(tmp_path / "ws", {"run.sh": "#!/bin/sh\necho hi\n"})
    os.chmod(root / "run.sh", 0o755)
    snapshot = snap(root)
    dest = materialize(root / ".kale/snapshots", snapshot.id, tmp_path / "m")
    assert subprocess.run(["./run.sh"], cwd=dest, capture_output=True, text=True).stdout == "hi\n"
    assert stat.S_IMODE((dest / "run.sh").stat().st_mode) == 0o555


def test_symlinks_inside_are_kept_outside_are_reported_not_followed(tmp_path):
    outside = make_tree(tmp_path / "outside", {"secret.txt": "not for the snapshot"})
    root = make_tree(tmp_path / "ws", {"data/a.csv": "1\n"})
    (root / "escape").symlink_to(outside / "secret.txt")
    (root / "escape_dir").symlink_to(outside)
    (root / "rel").symlink_to("data/a.csv")
    (root / "abs").symlink_to(root / "data" / "a.csv")

    snapshot = snap(root)
    data = manifest(snapshot)
    assert paths(snapshot) == ["data/a.csv"]
    assert {s["path"]: s["target"] for s in data["symlinks"]} == {"abs": "data/a.csv", "rel": "data/a.csv"}
    assert sorted(s["path"] for s in data["skipped"]) == ["escape", "escape_dir"]
    assert any("escape" in w and "outside the workspace" in w for w in snapshot.warnings)
    assert not any(o.read_bytes() == b"not for the snapshot" for o in object_files(root))

    dest = materialize(root / ".kale/snapshots", snapshot.id, tmp_path / "m")
    assert (dest / "abs").read_text() == "1\n" and os.readlink(dest / "abs") == "data/a.csv"
    assert not (dest / "escape").exists()


UNREADABLE = """
import sys
from pathlib import Path
from kale_magic.snapshot import take_snapshot, SnapshotError
root = Path(sys.argv[1])
try:
    take_snapshot(root, Path(sys.argv[2]))
except SnapshotError as error:
    print(error)
    sys.exit(3)
"""


def without_read_override() -> list[str]:
    """A command prefix under which permission bits bind: root bypasses them unless it drops
    the DAC capabilities (``setpriv``, util-linux)."""
    if os.geteuid() != 0:
        return []
    if not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv: cannot make a file unreadable")
    caps = "-dac_override,-dac_read_search"
    return ["setpriv", "--bounding-set", caps, "--inh-caps", caps]


def test_unreadable_file_is_a_clear_error_and_no_snapshot(tmp_path):
    root = make_tree(tmp_path / "ws", {"ok.txt": "fine", "secret.txt": "locked"})
    os.chmod(root / "secret.txt", 0o000)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    command = [*without_read_override(), sys.executable, "-c", UNREADABLE, str(root), str(tmp_path / "store")]
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    assert result.returncode == 3, result.stderr
    assert "cannot read 'secret.txt' (Permission denied)" in result.stdout
    assert ".kaleignore" in result.stdout
    assert not list((tmp_path / "store").glob("manifests/*.json"))


def test_size_cap_refuses_naming_the_largest_files(tmp_path):
    root = make_tree(tmp_path / "ws", {"big.bin": b"x" * 300_000, "mid.bin": b"x" * 200_000,
                                       "small.txt": "x"})
    with pytest.raises(SnapshotError) as refused:
        snap(root, max_bytes=400_000)
    message = str(refused.value)
    assert "above the snapshot limit" in message and "--snapshot-max" in message
    assert message.index("big.bin (293.0 KiB)") < message.index("mid.bin (195.3 KiB)")
    assert not (root / ".kale/snapshots/manifests").exists()

    warned = snap(root, warn_bytes=100_000, max_bytes=None)
    assert len(warned.warnings) == 1 and "big.bin" in warned.warnings[0]
    assert ".kaleignore" in warned.warnings[0]
    assert snap(root, warn_bytes=None, max_bytes=None).warnings == []


def test_file_changing_while_copied_is_read_again(tmp_path, monkeypatch):
    root = make_tree(tmp_path / "ws", {"log.csv": "row1\n"})
    original = ObjectStore.ingest
    writes = iter(["row1\nrow2\n"])

    def ingest_while_appended(self, source):
        result = original(self, source)
        content = next(writes, None)
        if content is not None:  # another process writes just as the copy finishes
            Path(source).write_text(content)
        return result

    monkeypatch.setattr(ObjectStore, "ingest", ingest_while_appended)
    snapshot = snap(root)
    entry = manifest(snapshot)["files"][0]
    assert ObjectStore(root / ".kale/snapshots/objects").path(object_name(entry)).read_text() == "row1\nrow2\n"
    assert entry["size"] == len("row1\nrow2\n")


def test_file_that_never_settles_is_reported(tmp_path, monkeypatch):
    root = make_tree(tmp_path / "ws", {"busy.log": "0"})
    original = ObjectStore.ingest
    counter = iter(range(1, 100))

    def ingest_while_written(self, source):
        result = original(self, source)
        Path(source).write_text(str(next(counter)) * 3)
        return result

    monkeypatch.setattr(ObjectStore, "ingest", ingest_while_written)
    with pytest.raises(SnapshotError, match="'busy.log' kept changing"):
        snap(root)
    assert not (root / ".kale/snapshots/manifests").exists()


def test_full_disk_is_a_clear_error_and_leaves_no_snapshot(tmp_path, tiny_disk):
    root = make_tree(tmp_path / "ws", {"small.txt": "x", "large.bin": os.urandom(3 << 20)})
    store = tiny_disk / "store"
    with pytest.raises(SnapshotError, match="is full .* no snapshot was recorded"):
        take_snapshot(root, store)
    assert not (store / "manifests").exists()
    assert list((store / "objects/tmp").iterdir()) == []


def test_damaged_object_is_detected_and_replaced_by_the_next_snapshot(file_tree, tmp_path):
    first = snap(file_tree)
    entry = next(e for e in manifest(first)["files"] if e["path"] == "train.py")
    obj = ObjectStore(file_tree / ".kale/snapshots/objects").path(object_name(entry))
    os.chmod(obj, 0o644)
    obj.write_text("print('tampered')\n")  # e.g. a root step writing through a hard link
    with pytest.raises(SnapshotError, match="damaged.*'train.py'"):
        materialize(file_tree / ".kale/snapshots", first.id, tmp_path / "m1")
    second = snap(file_tree)
    dest = materialize(file_tree / ".kale/snapshots", second.id, tmp_path / "m2")
    assert (dest / "train.py").read_text() == "print('train')\n"


def test_environment_records_python_packages_cells_and_notebook(file_tree):
    notebook = file_tree / "analysis.ipynb"
    notebook.write_text('{"cells": []}')
    snapshot = snap(file_tree, notebook=notebook, cells=["%%step load\nx = 1", "%%step train\ny = x"])
    env = manifest(snapshot)["environment"]
    import platform

    import pytest as pytest_module
    assert env["python"] == platform.python_version()
    assert env["packages"]["pytest"] == pytest_module.__version__
    assert env["cells"] == ["%%step load\nx = 1", "%%step train\ny = x"]
    assert env["notebook"]["path"] == "analysis.ipynb"
    stored = ObjectStore(file_tree / ".kale/snapshots/objects").path(object_name(env["notebook"]))
    assert stored.read_text() == '{"cells": []}'


def test_unknown_snapshot_id_names_the_known_ones(file_tree, tmp_path):
    snapshot = snap(file_tree)
    with pytest.raises(SnapshotError, match=f"'nope' does not exist .*{snapshot.id}"):
        materialize(file_tree / ".kale/snapshots", "nope", tmp_path / "m")
    assert materialize(file_tree / ".kale/snapshots", snapshot.id[:12], tmp_path / "m").is_dir()


def install_fake(site: Path, name: str, version: str) -> None:
    """What pip leaves behind: a ``*.dist-info`` folder with a METADATA file."""
    for old in site.glob(f"{name}-*.dist-info"):
        shutil.rmtree(old)
    info = site / f"{name}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\nbody: x\n")


def test_package_changes_are_seen_by_the_next_snapshot_and_its_diff(file_tree, tmp_path, monkeypatch):
    from kale_magic.snapshot import diff

    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    install_fake(site, "kale-fake-dep", "1.0")
    first = snap(file_tree)
    assert manifest(first)["environment"]["packages"]["kale-fake-dep"] == "1.0"

    install_fake(site, "kale-fake-dep", "2.0")
    second = snap(file_tree)
    assert manifest(second)["environment"]["packages"]["kale-fake-dep"] == "2.0"
    changes = diff(file_tree / ".kale/snapshots", first.id, second.id)
    assert changes.lines() == ["package kale-fake-dep 1.0 -> 2.0"]


def test_pipes_are_left_out_and_reported(tmp_path):
    root = make_tree(tmp_path / "ws", {"a.txt": "a"})
    os.mkfifo(root / "events.pipe")
    snapshot = snap(root)
    assert paths(snapshot) == ["a.txt"]
    assert any("events.pipe" in w and "not a regular file" in w for w in snapshot.warnings)


def test_file_deleted_during_the_snapshot_is_left_out_and_reported(tmp_path, monkeypatch):
    root = make_tree(tmp_path / "ws", {"keep.txt": "k", "temp.txt": "t"})
    original = ObjectStore.ingest

    def ingest_after_delete(self, source):
        if Path(source).name == "temp.txt":
            Path(source).unlink()  # another process cleans up just now
        return original(self, source)

    monkeypatch.setattr(ObjectStore, "ingest", ingest_after_delete)
    snapshot = snap(root)
    assert paths(snapshot) == ["keep.txt"]
    assert any("temp.txt" in w and "deleted while" in w for w in snapshot.warnings)
