"""Step caching and resume for the local engine.

A step whose cache key (see :mod:`.keys`) matches an earlier successful run is
not executed: its verified outputs are hard-linked into the new run and its
state shows ``cached`` with the run it came from.  :func:`clear` frees disk.
"""

from .index import CacheIndex, Cleared, clear
from .keys import digest, explain, key_parts, snapshot_fingerprint
from .reuse import Decision, StepCache, check_text

__all__ = ["CacheIndex", "Cleared", "Decision", "StepCache", "check_text", "clear", "digest", "explain",
           "key_parts", "snapshot_fingerprint"]
