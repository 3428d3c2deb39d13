"""A notebook driven through random edits, each run checked against a fresh ``--no-cache`` run (the oracle).

Shared by the property test (:mod:`test_cache_property`) and the soak
(``benchmarks/bench_cache_soak.py``).  The notebook reads a CSV with pandas, a
Parquet file (pyarrow's native reader), a helper module on an absolute
``sys.path`` entry, a file through a subprocess (the conservative key) and a
parameter; an edit rewrites one of them, or a file no step reads, or nothing.
"""

from __future__ import annotations

import contextlib
import io
import time
from dataclasses import dataclass, field
from pathlib import Path

STEPS = [
    "%%parameters\nscale = 1",
    "%%imports\nimport subprocess\nimport pandas as pd",
    "%%step load\ncsv_sum = int(pd.read_csv('data/values.csv').x.sum())",
    "%%step columnar --after ''\npq_sum = int(pd.read_parquet('data/values.parquet').y.sum())",
    "%%step combine --after load,columnar\nimport helper_walk\nresult = helper_walk.combine(csv_sum, pq_sum) * scale",
    "%%step shell --after ''\nnotes = subprocess.run(['cat', 'notes.txt'], capture_output=True, "
    "text=True).stdout",
]


@dataclass
class Tally:
    edits: int = 0
    runs: int = 0
    reused: int = 0  # steps the cached runs reused
    executed: int = 0  # steps the cached runs executed
    cached_seconds: float = 0.0  # the runs with the cache
    fresh_seconds: float = 0.0  # the oracle's runs (--no-cache), the same-run baseline
    mismatches: list[str] = field(default_factory=list)


class CacheWalk:
    """The notebook in ``folder`` run by ``shell`` (an InteractiveShell with kale_magic loaded)."""

    def __init__(self, shell, folder: Path):
        self.shell, self.folder = shell, Path(folder)
        self.scale = 1
        self.tally = Tally()

    def start(self) -> None:
        (self.folder / "data").mkdir(exist_ok=True)
        (self.folder / "lib").mkdir(exist_ok=True)
        self.apply("csv", [1, 2, 3])
        self.apply("parquet", [4, 5])
        self.apply("helper", 2)
        self.apply("notes", "first")
        (self.folder / "scratch.txt").write_text("")
        self.tally.edits = 0
        self._cell(f"import sys\nsys.path.insert(0, {str(self.folder / 'lib')!r})", "setup")
        for i, source in enumerate(STEPS):
            self._cell(source, f"cell-{i}")

    def _cell(self, source: str, cell_id: str) -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            result = self.shell.run_cell(source, store_history=False, cell_id=cell_id)
        if not result.success:
            raise AssertionError(f"cell {cell_id} failed: {result.error_in_exec or result.error_before_exec}")

    def apply(self, kind: str, value) -> None:
        """One edit of the workspace or the parameters."""
        self.tally.edits += 1
        if kind == "csv":
            _write(self.folder / "data" / "values.csv", "x\n" + "".join(f"{v}\n" for v in value))
        elif kind == "parquet":
            import pandas as pd

            pd.DataFrame({"y": list(value)}).to_parquet(self.folder / "data" / "values.parquet")
        elif kind == "helper":
            _write(self.folder / "lib" / "helper_walk.py", f"def combine(a, b):\n    return a * {value} + b\n")
        elif kind == "notes":
            _write(self.folder / "notes.txt", str(value))
        elif kind == "param":
            self.scale = value
        elif kind == "scratch":
            _write(self.folder / "scratch.txt", str(value))
        elif kind == "touch":  # same content, new mtime: must not change any result
            path = self.folder / "lib" / "helper_walk.py"
            _write(path, path.read_text())

    def check(self, no_snapshot: bool) -> None:
        """Run with the cache, then without it; every value must be the same."""
        from oracle import values_equal

        line = f"--param scale={self.scale}" + (" --no-snapshot" if no_snapshot else "")
        started = time.perf_counter()
        cached = self._run(line)
        middle = time.perf_counter()
        fresh = self._run(line + " --no-cache")
        self.tally.cached_seconds += middle - started
        self.tally.fresh_seconds += time.perf_counter() - middle
        self.tally.reused += sum(1 for s in cached.steps.values() if s.status == "cached")
        self.tally.executed += sum(1 for s in cached.steps.values() if s.status == "succeeded")
        for run in (cached, fresh):
            if run.status != "succeeded":
                self.tally.mismatches.append(f"edit {self.tally.edits}: run {run.id} {run.status}")
                return
        for transfer in fresh.plan.transfers():  # every value a step saves, the final ones too
            a, b = cached.load(transfer.name, step=transfer.producer), fresh.load(transfer.name, step=transfer.producer)
            if not values_equal(a, b):
                self.tally.mismatches.append(f"edit {self.tally.edits} ({line}): {transfer.name} is {a!r} cached, "
                                             f"{b!r} fresh")

    def _run(self, line: str):
        from kale_magic.errors import RunFailed

        self.tally.runs += 1
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                return self.shell.run_line_magic("kale_run", line)
            except RunFailed as failure:
                return failure.run


def _write(path: Path, text: str) -> None:
    """Rewrite in place, as an editor that truncates does: same inode, maybe the same size and tick."""
    path.write_text(text)
