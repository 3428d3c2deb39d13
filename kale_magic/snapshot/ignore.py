"""Which workspace paths a snapshot leaves out: ``.gitignore`` and ``.kaleignore`` rules.

Both files use git's wildmatch syntax (parsed by ``pathspec``) and may sit in any
directory; as in git, a deeper file overrides a shallower one, and within one
directory ``.kaleignore`` is read after ``.gitignore`` so it can re-include
(``!data/``) what git ignores.  A few directories are never snapshotted: kale's
own ``.kale/`` (runs and snapshots), version control and caches; nor is a ``.env`` file (secrets).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..layout import KALE_DIR

if TYPE_CHECKING:
    import pathspec

IGNORE_FILES = (".gitignore", ".kaleignore")
ALWAYS_SKIPPED = frozenset({KALE_DIR, ".git", ".hg", ".svn", ".ipynb_checkpoints", "__pycache__"})
# Secrets for local steps (kale_magic.step.environment): a run writes no secret value, so no snapshot holds one.
ALWAYS_SKIPPED_FILES = frozenset({".env"})


class IgnoreRules:
    """Ignore specs per directory, loaded as the walk enters each directory."""

    def __init__(self) -> None:
        self._specs: dict[str, pathspec.GitIgnoreSpec] = {}

    def enter(self, rel_dir: str, abs_dir: Path) -> None:
        """Read the ignore files of a directory the walk is about to list."""
        lines: list[str] = []
        for name in IGNORE_FILES:
            try:
                lines += (abs_dir / name).read_text(errors="replace").splitlines()
            except OSError:  # absent (usually), or unreadable: no rules from it
                continue
        if lines:
            import pathspec  # here, not at import: a Kubeflow step unpacking a snapshot walks no workspace

            self._specs[rel_dir] = pathspec.GitIgnoreSpec.from_lines(lines)

    def ignored(self, rel_path: str, is_dir: bool) -> bool:
        """``rel_path`` is POSIX-style, relative to the workspace root."""
        parent, _, name = rel_path.rpartition("/")
        if name in (ALWAYS_SKIPPED if is_dir else ALWAYS_SKIPPED_FILES):
            return True
        suffix = "/" if is_dir else ""
        base = parent
        while True:
            spec = self._specs.get(base)
            if spec is not None:
                relative = rel_path[len(base) + 1:] if base else rel_path
                verdict = spec.check_file(relative + suffix).include
                if verdict is not None:
                    return verdict
            if not base:
                return False
            base = base.rpartition("/")[0]
