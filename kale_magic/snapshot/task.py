"""The Snapshot task of ``%kale_run``: freeze the workspace, give the run a frozen copy.

Kept here so ``launch`` needs one call: it reports into the run's state, and
returns the snapshot plus, for local runs, the materialized working directory.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import KaleError
from ..run.state import RunState
from .manifest import Snapshot, list_snapshots, load_snapshot
from .materialize import materialize
from .sizes import format_size
from .workspace import take_snapshot


def snapshot_task(state: RunState, root: Path, store: Path, *, notebook: Path | None,
                  cells: list[str], from_snapshot: str | None, warn_bytes: int | None,
                  max_bytes: int | None, workdir: Path | None) -> tuple[Snapshot, Path | None]:
    """Take (or, with ``from_snapshot``, reuse) a snapshot; materialize it at ``workdir`` if given."""
    state.task("Snapshot", "running")
    try:
        if from_snapshot:
            snapshot = load_snapshot(store, from_snapshot)
        else:
            snapshot = take_snapshot(root, store, notebook=notebook, cells=cells,
                                     warn_bytes=warn_bytes, max_bytes=max_bytes)
        materialized = materialize(store, snapshot.id, workdir) if workdir else None
    except KaleError as error:
        state.task("Snapshot", "failed", str(error))
        raise
    reused = " (reused)" if from_snapshot else ""
    message = "; ".join([snapshot.summary() + reused, *snapshot.warnings])
    state.links["snapshot"] = str(snapshot.manifest)
    state.task("Snapshot", "done", message, manifest=str(snapshot.manifest))
    return snapshot, materialized


def cell_texts(cells) -> list[str]:
    """Recorded cells as the user wrote them, magic line included."""
    return [f"%%{c.kind}{' ' + c.step if c.step else ''}\n{c.source}" for c in cells]


def snapshot_table(store: Path, last: int = 20) -> str:
    snapshots = list_snapshots(store)[-last:] if Path(store).exists() else []
    if not snapshots:
        return f"no snapshots yet in {store} (%kale_run takes one unless --no-snapshot)"
    lines = [f"{s.id}  {s.created[:19].replace('T', ' ')}  {s.file_count:>6} files  "
             f"{format_size(s.total_bytes):>10}" for s in snapshots]
    return "\n".join(lines + [f"restore one: kale-magic snapshot --root {Path(store).parent.parent} "
                              "restore ID DIR"])
