"""The run store: every run, local or KFP, recorded in ``.kale/runs.db`` (SQLite).

It is the one run registry: ``%kale_runs`` and ``kale-magic runs`` read it, and
so does ``--resume`` (each step's cache key is kept with its status).

Two kernels may run pipelines at once, so the database is in WAL mode with a
busy timeout and every write is one ``BEGIN IMMEDIATE`` transaction (a writer
waits for the other instead of failing half way).  A running run records its
owner (:mod:`.owner`); opening the store marks the runs of dead kernels
``interrupted``.  The schema carries its version in ``PRAGMA user_version`` and
is migrated forward on open, one step at a time; old rows stay readable.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .. import skips
from ..errors import KaleError
from ..layout import KaleDir
from .owner import Owner

# Each entry migrates version i to i + 1.  Never edit a shipped entry: append one.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE runs (
        run_id TEXT PRIMARY KEY, experiment TEXT NOT NULL, pipeline TEXT NOT NULL,
        engine TEXT NOT NULL, status TEXT NOT NULL, started REAL NOT NULL, ended REAL,
        parameters TEXT NOT NULL DEFAULT '{}', metrics TEXT NOT NULL DEFAULT '{}',
        snapshot_id TEXT, yaml_path TEXT, kfp_run_id TEXT, links TEXT NOT NULL DEFAULT '{}',
        error TEXT NOT NULL DEFAULT '');
    CREATE INDEX runs_by_experiment ON runs (experiment, started);
    CREATE TABLE steps (
        run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE, name TEXT NOT NULL,
        position INTEGER NOT NULL, status TEXT NOT NULL, duration REAL, cached_from TEXT,
        PRIMARY KEY (run_id, name));
    """,
    """
    ALTER TABLE runs ADD COLUMN kfp_pipeline_id TEXT;
    ALTER TABLE runs ADD COLUMN kfp_version_id TEXT;
    ALTER TABLE steps ADD COLUMN code_hash TEXT;
    ALTER TABLE steps ADD COLUMN message TEXT NOT NULL DEFAULT '';
    """,
    """
    ALTER TABLE runs ADD COLUMN kfp_experiment_id TEXT;
    ALTER TABLE steps ADD COLUMN cache_key TEXT;
    CREATE INDEX runs_by_pipeline ON runs (pipeline, status, ended);
    """,
    """
    ALTER TABLE runs ADD COLUMN owner TEXT NOT NULL DEFAULT '{}';
    """,
    """
    ALTER TABLE runs ADD COLUMN sweep_id TEXT;
    CREATE INDEX runs_by_sweep ON runs (sweep_id, started);
    """,
    # a skip's kind (kale_magic.skips) beside its message, and a --foreach step's items; rows written before
    # have their kind read once from the words the engines used then
    """
    ALTER TABLE steps ADD COLUMN skip TEXT NOT NULL DEFAULT '';
    ALTER TABLE steps ADD COLUMN items TEXT;
    UPDATE steps SET skip = CASE
        WHEN message LIKE 'not run (not selected%' THEN 'not-selected'
        WHEN message = 'skipped: the run was interrupted' THEN 'interrupted'
        WHEN message LIKE '%skipped: the run was cancelled' OR message LIKE '%canceled' THEN 'cancel'
        WHEN message LIKE '%skipped: upstream step %' OR message LIKE 'skipped: the run ended %' THEN 'failure'
        WHEN message LIKE 'condition % was false%' OR message LIKE '%: condition % was false%'
            OR message LIKE '%skipped: step ''%'' was skipped%' OR message LIKE 'skipped: the condition %'
            OR message = 'skipped: Kubeflow Pipelines did not run it' THEN 'condition'
        ELSE '' END WHERE status = 'skipped';
    UPDATE steps SET skip = 'not-selected' WHERE status = 'cached' AND message LIKE 'reused from run % (not selected)'
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)

_RUN_COLUMNS = ("run_id", "experiment", "pipeline", "engine", "status", "started", "ended",
                "parameters", "metrics", "snapshot_id", "yaml_path", "kfp_run_id",
                "kfp_pipeline_id", "kfp_version_id", "kfp_experiment_id", "links", "error", "owner", "sweep_id")
_STEP_COLUMNS = ("name", "status", "duration", "cached_from", "code_hash", "message", "cache_key", "skip", "items")
_JSON_COLUMNS = ("parameters", "metrics", "links", "owner")
_STEP_MOVES = ("running", "succeeded", "failed", "cached", "skipped")  # step statuses the registry is told


@dataclass
class StepRecord:
    name: str
    status: str
    duration: float | None = None
    cached_from: str | None = None
    code_hash: str | None = None
    message: str = ""
    cache_key: str | None = None  # the step's cache key in that run (local engine), for --resume
    skip: str = ""  # a skipped step's kind of reason (kale_magic.skips); "" before the store kept it
    items: list["StepRecord"] | None = None  # a --foreach step's items (local engine), named step[i]

    def row(self, column: str):
        """The value of ``column`` as the steps table holds it (its items as JSON, only what they say)."""
        if column != "items":
            return getattr(self, column)
        return None if self.items is None else json.dumps(
            [{k: v for k, v in asdict(item).items() if v not in (None, "")} for item in self.items])

    @classmethod
    def from_row(cls, row) -> "StepRecord":
        data = dict(row)
        items = json.loads(data.pop("items") or "null")
        return cls(**data, items=None if items is None else [cls(**item) for item in items])


@dataclass
class RunRecord:
    run_id: str
    experiment: str
    pipeline: str
    engine: str
    status: str
    started: float
    ended: float | None = None
    parameters: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    snapshot_id: str | None = None
    yaml_path: str | None = None
    kfp_run_id: str | None = None
    kfp_pipeline_id: str | None = None
    kfp_version_id: str | None = None
    kfp_experiment_id: str | None = None
    links: dict = field(default_factory=dict)
    error: str = ""
    steps: list[StepRecord] = field(default_factory=list)
    owner: dict = field(default_factory=dict)  # the process that recorded it (history.owner.Owner)
    sweep_id: str | None = None  # the sweep this run is a point of (%kale_run --sweep)

    @property
    def duration(self) -> float | None:
        return None if self.ended is None else self.ended - self.started

    def as_dict(self) -> dict:
        return asdict(self)


def code_hash(cells) -> str:
    """A short fingerprint of a step's code, so two runs can say which steps changed."""
    digest = hashlib.sha256("\n\x00\n".join(cells).encode()).hexdigest()
    return digest[:16]


def step_hashes(cells) -> dict[str, str]:
    """Step name -> :func:`code_hash` of its cells as typed, from recorded cells (``RecordedCell``)."""
    sources: dict[str, list[str]] = {}
    for cell in cells:
        if cell.kind == "step":
            sources.setdefault(cell.step, []).append(cell.source)
    return {name: code_hash(code) for name, code in sources.items()}


class RunStore:
    """Records runs and answers queries; one connection, usable from any thread."""

    def __init__(self, path: str | Path, timeout: float = 30.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None,
                                     check_same_thread=False)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        self._use_wal(timeout)
        # In WAL mode, NORMAL still keeps every commit through a crash of the process (a killed kernel);
        # only a crash of the machine may lose the last ones.  It saves an fsync per write (steps start, end).
        self._conn.execute("PRAGMA synchronous = NORMAL")
        self._conn.execute("PRAGMA foreign_keys = ON")
        self._lock = threading.Lock()
        self._migrate()
        self.mark_interrupted()

    def _use_wal(self, timeout: float) -> None:
        """WAL mode persists in the file; switching needs an exclusive lock that SQLite's busy
        handler does not wait for, so two kernels creating the store at once retry here."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self._conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    self._conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    @classmethod
    def for_workspace(cls, root: str | Path = ".") -> "RunStore":
        """The store of the notebooks in folder ``root``."""
        return cls(KaleDir(root).runs_db)

    def close(self) -> None:
        """Close the connection once no thread uses it (a recorder's writer may be waiting on a lock):
        closing it under a running statement crashes SQLite; used after, it raises."""
        with self._lock:
            self._conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @contextmanager
    def _transaction(self, kind: str):
        with self._lock:
            self._conn.execute(f"BEGIN {kind}")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _write(self):
        return self._transaction("IMMEDIATE")

    def _read(self):
        """A snapshot: a run and its steps are read as of one moment."""
        return self._transaction("DEFERRED")

    def _migrate(self) -> None:
        with self._write() as conn:  # re-read inside the lock: another process may have migrated
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise KaleError(f"{self.path} was written by a newer kale-magic (schema {version}); "
                                "upgrade kale-magic to read it.")
            for number in range(version, SCHEMA_VERSION):
                for statement in MIGRATIONS[number].split(";"):
                    if statement.strip():
                        conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @property
    def version(self) -> int:
        with self._read() as conn:
            return conn.execute("PRAGMA user_version").fetchone()[0]

    # writing ---------------------------------------------------------------
    def save(self, record: RunRecord, moved: bool = False) -> None:
        """Insert or replace a run and its steps in one transaction.  ``moved``: ``record.steps`` holds
        only the steps that changed since the last save, written in place (new ones last); the others
        stand.  A step's start or end then costs one row, not one per step of the run, so recording a
        run of thousands of steps stays linear."""
        values = [json.dumps(getattr(record, c), default=str) if c in _JSON_COLUMNS
                  else getattr(record, c) for c in _RUN_COLUMNS]
        marks = ", ".join("?" for _ in _RUN_COLUMNS)
        updates = ", ".join(f"{c} = excluded.{c}" for c in _RUN_COLUMNS[1:])
        columns, step_marks = ", ".join(_STEP_COLUMNS), ", ".join("?" for _ in _STEP_COLUMNS)
        with self._write() as conn:
            conn.execute(f"INSERT INTO runs ({', '.join(_RUN_COLUMNS)}) VALUES ({marks})"
                         f" ON CONFLICT (run_id) DO UPDATE SET {updates}", values)
            if moved:
                step_updates = ", ".join(f"{c} = excluded.{c}" for c in _STEP_COLUMNS[1:])
                conn.executemany(
                    f"INSERT INTO steps (run_id, position, {columns}) VALUES (?, (SELECT COUNT(*) FROM steps"
                    f" WHERE run_id = ?), {step_marks}) ON CONFLICT (run_id, name) DO UPDATE SET {step_updates}",
                    [(record.run_id, record.run_id, *(s.row(c) for c in _STEP_COLUMNS)) for s in record.steps])
                return
            conn.execute("DELETE FROM steps WHERE run_id = ?", (record.run_id,))
            conn.executemany(
                f"INSERT INTO steps (run_id, position, {columns}) VALUES (?, ?, {step_marks})",
                [(record.run_id, i, *(s.row(c) for c in _STEP_COLUMNS)) for i, s in enumerate(record.steps)])

    def mark_interrupted(self) -> list[str]:
        """Runs recorded as running whose kernel is gone become ``interrupted``; their ids.

        Called whenever a store is opened: by the next ``%kale_run``, ``%kale_runs`` and
        ``kale-magic runs``.  Steps that were running become ``interrupted`` too, the
        ones still waiting ``skipped``; ``--resume`` picks such a run up.
        """
        with self._read() as conn:
            rows = conn.execute("SELECT run_id, engine, owner FROM runs WHERE status = 'running'").fetchall()
        gone = []
        for row in rows:
            recorded = json.loads(row["owner"] or "{}")
            owner = Owner.from_dict(recorded)
            if owner is not None and owner.alive() is False:
                gone.append((row["run_id"], recorded.get("interrupted") or interrupted(owner.pid)))
        if not gone:
            return []
        steps = [("interrupted", "interrupted: the kernel ended while it ran", "", "running"),
                 ("skipped", "skipped: the run was interrupted", skips.INTERRUPTED, "pending")]
        with self._write() as conn:
            for run_id, error in gone:
                conn.execute("UPDATE runs SET status = 'interrupted', error = ? "
                             "WHERE run_id = ? AND status = 'running'", (error, run_id))
                conn.executemany("UPDATE steps SET status = ?, message = ?, skip = ? WHERE run_id = ? AND status = ?",
                                 [(status, message, skip, run_id, was) for status, message, skip, was in steps])
        return [run_id for run_id, _ in gone]

    def recorder(self, state=None, hashes: dict[str, str] | None = None, interrupted: str = "") -> "Recorder":
        """A listener persisting a run (see :class:`Recorder`); given ``state``, it is attached and saved now.
        ``interrupted``: what the run will mean if this kernel ends before it does, in its engine's words."""
        recorder = Recorder(self, hashes, interrupted)
        if state is not None:
            recorder(state, "attached")
            state.subscribe(recorder)
        return recorder

    # reading ---------------------------------------------------------------
    def runs(self, experiment: str | None = None, last: int | None = None,
             sweep: str | None = None) -> list[RunRecord]:
        """Runs oldest first; ``last`` keeps the most recent N; ``sweep``: the points of the sweep with
        this id (or unique prefix, or the random last part %kale_runs shows)."""
        conditions, args = [], []
        if experiment is not None:
            conditions.append("experiment = ?")
            args.append(experiment)
        if sweep is not None:
            conditions.append("sweep_id = ?")
            args.append(self.sweep_id(sweep))
        where = ("WHERE " + " AND ".join(conditions)) if conditions else ""
        limit = "LIMIT ?" if last is not None else ""
        if last is not None:
            args.append(int(last))
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT * FROM runs {where} ORDER BY started DESC, rowid DESC {limit}", args).fetchall()
            return [self._record(row) for row in reversed(rows)]

    def sweep_id(self, text: str) -> str:
        """The sweep id ``text`` names (whole, a prefix or its random last part); a clear error otherwise."""
        with self._read() as conn:
            ids = [row[0] for row in conn.execute(
                "SELECT DISTINCT sweep_id FROM runs WHERE sweep_id = ? OR substr(sweep_id, 1, ?) = ? "
                "OR substr(sweep_id, -?) = ?", (text, len(text), text, len(text) + 1, "-" + text))]
        if len(ids) == 1:
            return ids[0]
        what = "No sweep" if not ids else f"{len(ids)} sweeps match"
        raise KaleError(f"{what} {text!r} in {self.path}; %kale_runs shows each run's sweep id.")

    def experiments(self) -> list[str]:
        with self._read() as conn:
            rows = conn.execute("SELECT experiment FROM runs GROUP BY experiment ORDER BY MAX(started)")
            return [row[0] for row in rows]

    def get(self, run_id: str) -> RunRecord:
        """The run with this id or unique id prefix; a clear error otherwise."""
        rows = self._matching(run_id)
        if len(rows) == 1:
            return rows[0]
        what = "No run" if not rows else f"{len(rows)} runs match"
        raise KaleError(f"{what} {run_id!r} in {self.path}; %kale_runs (or `kale-magic runs`) "
                        "lists the recorded run ids.")

    def find(self, run_id: str) -> RunRecord | None:
        """Like :meth:`get`, but None when no single run matches."""
        rows = self._matching(run_id)
        return rows[0] if len(rows) == 1 else None

    def run_ids(self, statuses: tuple[str, ...]) -> list[str]:
        """The ids of the runs whose status is one of ``statuses``, oldest first."""
        marks = ", ".join("?" for _ in statuses)
        with self._read() as conn:
            rows = conn.execute(f"SELECT run_id FROM runs WHERE status IN ({marks}) ORDER BY started, rowid",
                                statuses).fetchall()
        return [row[0] for row in rows]

    def last_failed(self, pipeline: str) -> str | None:
        """The id of this pipeline's most recent failed or interrupted run that got as far as running steps."""
        with self._read() as conn:
            row = conn.execute(
                "SELECT run_id FROM runs WHERE pipeline = ? AND status IN ('failed', 'interrupted') AND EXISTS"
                " (SELECT 1 FROM steps WHERE steps.run_id = runs.run_id AND cache_key IS NOT NULL)"
                " ORDER BY COALESCE(ended, started) DESC, rowid DESC LIMIT 1", (pipeline,)).fetchone()
        return row[0] if row else None

    def _matching(self, run_id: str) -> list[RunRecord]:
        with self._read() as conn:
            rows = conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchall() or \
                conn.execute("SELECT * FROM runs WHERE substr(run_id, 1, ?) = ?",
                             (len(run_id), run_id)).fetchall() or \
                conn.execute("SELECT * FROM runs WHERE substr(run_id, -?) = ?",  # the short id %kale_runs shows
                             (len(run_id) + 1, "-" + run_id)).fetchall()
            return [self._record(row) for row in rows]

    def _record(self, row: sqlite3.Row) -> RunRecord:
        data = {c: row[c] for c in _RUN_COLUMNS}
        for column in _JSON_COLUMNS:
            data[column] = json.loads(data[column] or "{}")
        steps = self._conn.execute(
            f"SELECT {', '.join(_STEP_COLUMNS)} FROM steps WHERE run_id = ? ORDER BY position",
            (row["run_id"],)).fetchall()
        return RunRecord(**data, steps=[StepRecord.from_row(s) for s in steps])


class Recorder:
    """A state listener that writes its run when it starts, when a step starts or ends, and when it finishes.

    Not on every progress event; steps are written so that a run whose kernel dies
    still says which steps were done (``--resume`` reuses them) and which one ran.
    The run carries its owner, this process, so that the next reader can tell it
    was interrupted.  Everything it writes comes from the state's snapshot; ids
    (snapshot, YAML, KFP) are data on the state, never read back from links.
    ``hashes`` (step name -> :func:`code_hash`) let two runs say which steps changed.
    """

    WAIT = 0.5  # seconds a write may hold the run's thread before it goes on in the background
    GIVE_UP = 600.0  # seconds a locked database may keep a record waiting before it is reported lost

    def __init__(self, store: RunStore, hashes: dict[str, str] | None = None, interrupted: str = ""):
        self.store = store
        self.hashes = dict(hashes or {})
        self.started = False
        # the engine's words are stored with the owner: the store's reader never asks the engine registry
        self.owner = {**Owner.current().as_dict(), **({"interrupted": interrupted} if interrupted else {})}
        self._steps: dict[str, str] = {}  # step -> the status last written
        self._lock = threading.Lock()  # guards the fields below
        self._writer: threading.Thread | None = None  # the thread writing, while it has records to write
        self._pending: RunRecord | None = None  # the newest record not yet written
        self._pending_moved = False  # whether it holds only the step that moved
        self._since = ""  # the event of the oldest change not yet written
        self._written = False  # whether the store holds any record of this run

    @property
    def view(self) -> str:
        return f"the run store ({self.store.path})"

    def __call__(self, state, event: str) -> None:
        if not self.started or event in ("finished", "steps"):  # "steps": the plan set the list of steps
            self.started = True
            self._write(state, event)
        elif self._step_moved(state, event):
            self._write(state, event, step=event.partition(":")[2])

    def _write(self, state, event: str, step: str | None = None) -> None:
        """Write the run in a writer thread, waiting for it at most :attr:`WAIT` seconds.

        A write takes milliseconds, so the run's thread normally sees it done.  While another
        connection holds the database (past the busy timeout, even), the run goes on: the writer
        keeps the newest record and writes it when the lock is released.  ``step``: only that step
        moved, and when nothing is waiting to be written only its row is (see :meth:`RunStore.save`);
        a record that replaces one still waiting is whole, so no step's change is lost.
        """
        with self._lock:
            writer = self._writer
            moved = step is not None and writer is None
            record = self._pending = self.record(state.snapshot(), only=step if moved else None)
            self._pending_moved = moved
            if writer is None:
                self._since = event
                writer = self._writer = threading.Thread(target=self._drain, daemon=True,
                                                         name=f"kale-store-{record.run_id}")
                writer.start()
        writer.join(self.WAIT)
        if writer.is_alive() and event == "finished":
            print(f"kale: {self.store.path} is locked by another connection: run {record.run_id} ended "
                  f"{record.status}, but its record there stops before '{self._since}'; it is written when "
                  "the lock is released", file=sys.stderr, flush=True)

    def _drain(self) -> None:
        """Write the newest pending record until none is left; a database locked for longer than
        :attr:`GIVE_UP` seconds is given up on, saying what the store missed."""
        deadline = time.monotonic() + self.GIVE_UP
        while True:
            with self._lock:
                record, moved = self._pending, self._pending_moved
            try:
                self.store.save(record, moved=moved)  # waits up to the store's busy timeout
            except Exception as exc:  # noqa: BLE001 (the writer thread must say what it lost, whatever it was)
                locked = isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc))
                if locked and time.monotonic() < deadline:
                    continue
                with self._lock:
                    self._pending = self._writer = None
                then = "kale-magic runs shows it as it was then" if self._written else "it has no record of the run"
                print(f"kale: {self.store.path} missed run {record.run_id}'s changes since '{self._since}' "
                      f"({exc}); {then}", file=sys.stderr, flush=True)
                return
            with self._lock:
                self._written = True
                if self._pending is record:  # nothing newer came while it wrote
                    self._pending = self._writer = None
                    return

    def _step_moved(self, state, event: str) -> bool:
        """A step started or ended since the last write."""
        kind, _, name = event.partition(":")
        status = state.steps[name].status if kind == "step" and name in state.steps else None
        if status not in _STEP_MOVES or self._steps.get(name) == status:
            return False
        self._steps[name] = status
        return True

    def record(self, run, only: str | None = None) -> RunRecord:
        """The run as the store keeps it; ``only``: with just that step (see :meth:`RunStore.save`)."""
        links = dict(run.links)
        for task in run.tasks.values():
            links.update({f"{task.name}: {k}": v for k, v in task.links.items()})
        steps = [_step_record(s, self.hashes.get(s.name))
                 for s in ([run.steps[only]] if only is not None else run.steps.values())]
        return RunRecord(
            run_id=run.run_id, experiment=run.experiment, pipeline=run.pipeline, engine=run.engine,
            status=run.status, started=run.started, ended=run.ended, parameters=dict(run.parameters),
            metrics=dict(run.metrics), links=links, error=run.error, steps=steps, owner=self.owner,
            **asdict(run.ids))


def _step_record(step, code: str | None = None) -> StepRecord:
    """A step's (or an item's) state as the store keeps it."""
    return StepRecord(step.name, step.status, step.duration if step.ended else None, step.cached_from, code,
                      step.message, step.cache_key, step.skip,
                      None if step.items is None else [_step_record(item) for item in step.items])


def interrupted(pid: int) -> str:
    """What a run means when the kernel that followed it (process ``pid``) ended, unless its engine
    recorded words of its own (``Recorder(interrupted=...)``, from ``EngineType.interrupted``)."""
    return (f"the kernel running it ended (pid {pid}) before the run finished; %kale_run --resume "
            "reuses the steps that were done")
