"""What the annotation magics recorded: cells, their kinds and step options, in order."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace

CELL_KINDS = ("imports", "functions", "parameters", "step", "metrics", "skip")


@dataclass(frozen=True)
class StepOptions:
    """Per-step options of ``%%step``; the KFP engine applies them, the local one records them."""

    after: tuple[str, ...] | None = None  # None: after the previous step in notebook order
    cpu: str | None = None
    memory: str | None = None
    gpu: int | None = None
    retries: int | None = None
    timeout: int | None = None
    image: str | None = None
    no_cache: bool = False
    reads: tuple[str, ...] = ()  # globs of workspace files it reads where the runtime cannot see (--reads)
    env: tuple[tuple[str, str], ...] = ()  # --env KEY=VALUE: variables set in the step's process
    secrets: tuple = ()  # --secret: kale_magic.step.environment.SecretRef, values resolved only when it runs
    foreach: tuple[str, str] | None = None  # --foreach VAR in NAME: (VAR, NAME)
    condition: str | None = None  # --if "EXPR": the step runs only when it holds (plan.condition checks it)


@dataclass(frozen=True)
class RecordedCell:
    kind: str
    source: str  # the cell body as typed, without the magic line
    python: str  # IPython's transformed source (magics and ! lines turned into calls)
    key: str  # identity used to replace a re-executed cell
    seq: int  # order of first execution
    cell_id: str | None = None
    step: str | None = None
    options: StepOptions = field(default_factory=StepOptions)
    created: frozenset[str] = frozenset()  # globals created or rebound when the cell ran

    @property
    def text(self) -> str:
        """The cell as the user wrote it, magic line included (what a snapshot records)."""
        return f"%%{self.kind}{' ' + self.step if self.step else ''}\n{self.source}"

    @property
    def label(self) -> str:
        """How error messages name this cell."""
        if self.kind == "step":
            return f"the %%step {self.step} cell"
        return f"the %%{self.kind} cell"


def cell_key(kind: str, step: str | None, cell_id: str | None, source: str) -> str:
    """A re-executed cell replaces what it recorded before.

    The frontend's cell id identifies a cell when there is one; without it a step
    is identified by its name and any other cell by its text.
    """
    if cell_id:
        return f"id:{cell_id}"
    if kind == "step":
        return f"step:{step}"
    return f"{kind}:" + hashlib.sha1(source.encode()).hexdigest()[:16]


def stale_key(kind: str, step: str | None, cell_id: str | None) -> str:
    """The key a cell that failed before running makes stale: its cell id's, else its step's, else its kind's
    (without ids, an edited non-step cell cannot be told from the others of its kind)."""
    if cell_id:
        return f"id:{cell_id}"
    return f"step:{step}" if kind == "step" and step else f"{kind}:stale"


class Session:
    """The ordered annotations of one kernel."""

    def __init__(self):
        self.cells: dict[str, RecordedCell] = {}
        self.stale: dict[str, str] = {}  # key -> why the cell's recording no longer matches the cell
        self._next_seq = 0

    def mark_stale(self, key: str, why: str) -> None:
        """The cell of ``key`` was re-run and failed before its magic ran: what it recorded is old code."""
        self.stale[key] = why

    def record(self, cell: RecordedCell) -> RecordedCell:
        for key in (cell.key, stale_key(cell.kind, cell.step, None), stale_key(cell.kind, None, None)):
            self.stale.pop(key, None)  # the cell ran: what it recorded is current again
        previous = self.cells.get(cell.key)
        if previous is not None:
            cell = replace(cell, seq=previous.seq)
        else:
            cell = replace(cell, seq=self._next_seq)
            self._next_seq += 1
        self.cells[cell.key] = cell
        return cell

    def forget(self, key: str) -> None:
        self.cells.pop(key, None)

    def reset(self) -> None:
        self.cells.clear()
        self.stale.clear()
        self._next_seq = 0

    def ordered(self, notebook_order: dict[str, int] | None = None) -> list[RecordedCell]:
        """Cells in notebook order when it is known (by cell id), else in execution order.

        Cells the notebook file does not list (not saved yet) follow, in execution order.
        """
        cells = list(self.cells.values())
        if not notebook_order:
            return sorted(cells, key=lambda c: c.seq)
        last = len(notebook_order)
        return sorted(cells, key=lambda c: (notebook_order.get(c.cell_id, last), c.seq))

    def __len__(self) -> int:
        return len(self.cells)
