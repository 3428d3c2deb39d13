"""Workspace and environment snapshots: every run starts from a frozen copy.

``take_snapshot`` stores each workspace file once by its content hash and writes a manifest;
``materialize`` gives a run read-only hard links to that content; ``pack``,
``upload``, ``download`` and ``unpack`` move a snapshot to the steps of a
Kubeflow pipeline through an S3-compatible object store.
"""

from .errors import SnapshotError
from .manifest import Snapshot, SnapshotDiff, diff, list_snapshots, resolve_id
from .materialize import materialize, restore
from .retention import prune
from .remote import download, is_store, pack, publish, published_url, unpack, upload
from .workspace import DEFAULT_MAX_BYTES, DEFAULT_WARN_BYTES, take_snapshot

__all__ = [
    "DEFAULT_MAX_BYTES", "DEFAULT_WARN_BYTES", "Snapshot", "SnapshotDiff", "SnapshotError",
    "diff", "download", "is_store", "list_snapshots", "materialize", "pack",
    "prune", "publish", "published_url", "resolve_id", "restore", "take_snapshot", "unpack", "upload",
]
