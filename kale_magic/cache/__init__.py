"""Step caching and resume for the local engine.

A step whose cache key (see :mod:`.keys`: its code, inputs, versions, and the
workspace files it read, :mod:`.workspace`) matches an earlier successful run is
not executed: its verified outputs are hard-linked into the new run and its
state shows ``cached`` with the run it came from.  :func:`clear` frees disk.
"""

from .index import CacheIndex, Cleared, clear, holdings
from .keys import digest, explain, key_parts
from .reuse import Decision, StepCache, check_text
from .workspace import LiveFiles, ScanFiles, SnapshotFiles, WorkspaceFiles

__all__ = ["CacheIndex", "Cleared", "Decision", "LiveFiles", "ScanFiles", "SnapshotFiles", "StepCache",
           "WorkspaceFiles", "check_text", "clear", "digest", "explain", "holdings", "key_parts"]
