"""The error users see when a snapshot cannot be taken, read or moved."""

from ..errors import KaleError


class SnapshotError(KaleError):
    """A workspace snapshot failed: unreadable file, full disk, size cap, object store refused."""

    label = "Kale snapshot"


def disk_full(path, error: OSError, outcome: str = "no snapshot was recorded") -> SnapshotError:
    return SnapshotError(
        f"the disk holding {path} is full ({error.strerror}); free some space or list large "
        f"files in .kaleignore — {outcome}")
