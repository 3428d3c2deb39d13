"""On a file system with reflinks (XFS here, in a loop-mounted image), a snapshot shares the files' extents.

Skipped where XFS cannot be made and mounted (not root, no ``mkfs.xfs``: ``apt-get install xfsprogs``).
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from test_snapshot import make_tree, manifest, snap

from kale_magic.snapshot import restore
from kale_magic.snapshot.objects import ObjectStore

SIZE = 64 << 20
pytestmark = pytest.mark.slow  # big data: a 64 MiB file system image


@pytest.fixture
def xfs(tmp_path):
    if os.geteuid() != 0 or not shutil.which("mkfs.xfs"):
        pytest.skip("needs root and mkfs.xfs (apt-get install xfsprogs)")
    image, mount = tmp_path / "xfs.img", tmp_path / "xfs"
    with open(image, "wb") as f:
        f.truncate(512 << 20)
    mount.mkdir()
    made = subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", str(image)], capture_output=True, text=True)
    if made.returncode or subprocess.run(["mount", "-o", "loop", str(image), str(mount)],
                                         capture_output=True).returncode:
        pytest.skip(f"cannot make and mount an XFS image here {made.stderr.strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def used(path) -> int:
    info = os.statvfs(path)
    return (info.f_blocks - info.f_bfree) * info.f_frsize


def test_a_snapshot_on_xfs_shares_extents_instead_of_copying(xfs):
    root = make_tree(xfs / "ws", {"big.bin": os.urandom(SIZE), "small.txt": "hello\n"})
    before = used(xfs)
    snapshot = snap(root)
    assert used(xfs) - before < SIZE // 8  # the 64 MiB were not written again
    entry = next(e for e in manifest(snapshot)["files"] if e["path"] == "big.bin")
    stored = ObjectStore(root / ".kale" / "snapshots" / "objects").path(entry["xxh3_128"])
    assert stored.read_bytes() == (root / "big.bin").read_bytes()

    restored = restore(root / ".kale" / "snapshots", snapshot.id, xfs / "restored")
    assert used(xfs) - before < SIZE // 4  # restored copies are clones too
    with open(restored / "big.bin", "r+b") as f:  # a clone is copy-on-write: the object keeps its bytes
        f.write(b"changed")
    assert stored.read_bytes() == (root / "big.bin").read_bytes()
