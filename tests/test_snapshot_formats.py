"""Snapshots taken before objects were named by xxh3 (format 1, SHA-256 names) stay usable beside new ones,
and the copy behind a snapshot is right whichever way the file system lets it be made."""

from __future__ import annotations

import errno
import hashlib
import json
import os

import xxhash
from test_snapshot import make_tree, manifest, snap

from kale_magic.snapshot import diff, materialize, pack, prune, restore, unpack
from kale_magic.snapshot import objects as objects_module
from kale_magic.snapshot.manifest import object_name
from kale_magic.snapshot.objects import SEAL_MTIME_NS, ObjectStore

FILES = {"train.py": "print('train')\n", "data/train.csv": "a,b\n1,2\n", "big.bin": os.urandom(3 << 20)}


def as_format_1(store, snapshot) -> dict:
    """Rewrite a snapshot as the previous version stored it: objects and manifest keys by SHA-256."""
    data = manifest(snapshot)
    objects = ObjectStore(store / "objects")
    for entry in data["files"]:
        new = entry.pop("xxh3_128")
        old = hashlib.sha256(objects.path(new).read_bytes()).hexdigest()
        objects.path(old).parent.mkdir(exist_ok=True)
        os.replace(objects.path(new), objects.path(old))  # same sealed inode, the old name
        entry["sha256"] = old
    data["format"] = 1
    snapshot.manifest.write_text(json.dumps(data))
    remembered = json.loads((store / "hashcache.json").read_text())["files"]
    (store / "hashcache.json").write_text(json.dumps(  # the old cache: flat, with SHA-256 digests
        {rel: entry[:4] + [next(f["sha256"] for f in data["files"] if f["path"] == rel)]
         for rel, entry in remembered.items()}))
    return data


def test_a_format_1_snapshot_is_read_beside_new_ones(tmp_path):
    root = make_tree(tmp_path / "ws", FILES)
    store = root / ".kale" / "snapshots"
    old = snap(root)
    old_data = as_format_1(store, old)

    new = snap(root)  # the old hash cache holds SHA-256 digests: ignored, every file hashed again
    new_data = manifest(new)
    assert new_data["format"] == 2
    for entry in new_data["files"]:
        assert entry["xxh3_128"] == xxhash.xxh3_128((root / entry["path"]).read_bytes()).hexdigest()
    assert not diff(store, old.id, new.id)  # same bytes under either name
    (root / "train.py").write_text("print('edited')\n")
    assert diff(store, old.id, snap(root).id).changed == ["train.py"]

    for build in (materialize, restore):
        out = build(store, old.id, tmp_path / build.__name__)
        assert {rel: (out / rel).read_bytes() for rel in FILES} == {
            rel: c if isinstance(c, bytes) else c.encode() for rel, c in FILES.items()}
    unpacked = unpack(pack(store, old.id), tmp_path / "unpacked")
    assert (unpacked / "big.bin").read_bytes() == FILES["big.bin"]

    assert prune(store, keep=3).objects == 0  # a kept format-1 manifest keeps its objects
    objects = ObjectStore(store / "objects")
    assert all(objects.has(object_name(entry), entry["size"]) for entry in old_data["files"])


def test_without_reflinks_or_copy_file_range_the_copy_is_still_exact(tmp_path, monkeypatch):
    def refused(*args):
        raise OSError(errno.EXDEV, "cross-device")

    monkeypatch.setattr(objects_module, "fcntl", None)
    monkeypatch.setattr(os, "copy_file_range", refused)
    root = make_tree(tmp_path / "ws", FILES)
    data = manifest(snap(root))
    objects = ObjectStore(root / ".kale" / "snapshots" / "objects")
    for entry in data["files"]:
        stored = objects.path(entry["xxh3_128"])
        assert stored.read_bytes() == (root / entry["path"]).read_bytes()
        assert entry["xxh3_128"] == xxhash.xxh3_128(stored.read_bytes()).hexdigest()
        assert os.stat(stored).st_mtime_ns == SEAL_MTIME_NS
