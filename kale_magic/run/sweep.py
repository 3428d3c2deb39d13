"""``%kale_run --sweep``: one run per point of a parameter grid, and the :class:`Sweep` handle on them.

Every point is a run of its own in the run store (its parameters, status and metrics), grouped
under the sweep's id.  Steps that read no swept parameter (and whose ancestors read none) compute
the same thing at every point, so they must run once for the whole sweep: the first point starts
alone, and the others start when its shared steps are done, on the same workspace snapshot, so
each finds them in its engine's cache (the local step cache; KFP's own) instead of running them.
With ``--no-cache`` the other points resume from the first (``--resume``), which reuses exactly
the first point's shared steps and nothing older.  Points run at once up to ``max_parallel``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from typing import Callable

from ..errors import KaleError
from ..plan import Plan
from .grid import Grid
from .handle import Run
from .launch import RunRequest, new_run_id

DONE = ("succeeded", "cached")


def shared_steps(plan: Plan, swept: tuple[str, ...]) -> tuple[str, ...]:
    """The steps that read no swept parameter and whose ancestors read none: the same at every point."""
    shared: list[str] = []
    for name, step in plan.steps.items():  # topological order: parents first
        if not set(step.parameters) & set(swept) and all(p in shared for p in step.parents):
            shared.append(name)
    return tuple(shared)


@dataclass
class Point:
    """One point of the grid: its swept values, the request that runs it, its run once started."""

    number: int
    values: dict
    request: RunRequest
    run: Run | None = None
    note: str = ""  # why it did not start, if it did not

    @property
    def status(self) -> str:
        if self.run is not None:
            return self.run.status
        return "not started" if self.note else "pending"


@dataclass
class Sweep:
    """What ``%kale_run --sweep`` returns: the grid's runs, one per point, and ways to compare them."""

    id: str
    grid: Grid
    shared: tuple[str, ...]
    points: list[Point]
    _finished: threading.Event = field(default_factory=threading.Event, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _engines: list = field(default_factory=list, repr=False)
    # called with the sweep as each point starts and once when it ends (the sweep panel)
    listeners: list[Callable] = field(default_factory=list, repr=False)

    @property
    def runs(self) -> list[Run]:
        """The points' runs, in grid order (while the sweep goes on, those started so far)."""
        return [p.run for p in self.points if p.run is not None]

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    @property
    def status(self) -> str:
        """``running`` until every point ended; then ``succeeded`` when all did, else ``failed``."""
        if not self._finished.is_set():
            return "running"
        return "succeeded" if all(p.status == "succeeded" for p in self.points) else "failed"

    def wait(self, timeout: float | None = None) -> "Sweep":
        self._finished.wait(timeout)
        return self

    def cancel(self) -> None:
        """Start no more points and stop the running ones (Ctrl-C while a sweep runs)."""
        self._stop.set()
        for engine in list(self._engines):
            engine.cancel()

    def rows(self) -> list[dict]:
        """One dict per point: its swept values, run id, status and metrics."""
        return [{**p.values, "run": p.run.id if p.run else "", "status": p.status,
                 **(p.run.metrics if p.run else {})} for p in self.points]

    def table(self):
        """One row per point: its parameters, status and metrics (a pandas DataFrame when pandas is
        installed, else the rows as a list of dicts)."""
        rows = self.rows()
        try:
            import pandas as pd
        except ImportError:
            return rows
        return pd.DataFrame(rows, index=pd.RangeIndex(1, len(rows) + 1, name="point"))

    def best(self, metric: str, mode: str = "max") -> Run:
        """The Run with the highest ``metric`` (``mode="min"``: the lowest) among the points that succeeded."""
        if mode not in ("max", "min"):
            raise KaleError(f"best({metric!r}, mode={mode!r}): mode is 'max' or 'min'.")
        scored = [(p.run.metrics[metric], p.run) for p in self.points
                  if p.status == "succeeded" and _is_number(p.run.metrics.get(metric))]
        if not scored:
            seen = sorted({m for run in self.runs for m in run.metrics})
            raise KaleError(f"no point of sweep {self.id} that succeeded has a numeric metric '{metric}' "
                            f"(metrics: {', '.join(seen) or 'none'}).")
        pick = max if mode == "max" else min
        return pick(scored, key=lambda item: item[0])[1]

    def __repr__(self) -> str:
        lines = [f"<Sweep {self.id} {self.status}: {len(self.points)} points over {', '.join(self.grid.names)}"
                 + (f"; shared steps run once: {', '.join(self.shared)}" if self.shared else "") + ">"]
        for point in self.points:
            values = " ".join(f"{k}={v!r}" for k, v in point.values.items())
            metrics = "".join(f" {k}={v!r}" for k, v in (point.run.metrics if point.run else {}).items())
            lines.append(f"  {point.number}. {values}: {point.status}{metrics}"
                         + (f" ({point.note})" if point.note else ""))
        return "\n".join(lines)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def new_sweep(request: RunRequest, grid: Grid, plan: Plan) -> Sweep:
    """The sweep of ``request`` over ``grid``; ``plan``: the notebook's, to know which steps are shared."""
    sweep_id = "sweep-" + new_run_id()
    points = [Point(number, values, replace(request, sweep_id=sweep_id, background=True,
                                            params={**request.params, **grid.overrides(values, plan.parameters)}))
              for number, values in enumerate(grid.points, 1)]
    return Sweep(sweep_id, grid, shared_steps(plan, grid.names), points)


def run_sweep(sweep: Sweep, start: Callable[[RunRequest], tuple[Run, object]], max_parallel: int) -> Sweep:
    """Start the sweep's points in a thread of their own and return at once; ``start(request)`` starts
    one point's run in the background and returns (its Run, its engine)."""
    threading.Thread(target=_coordinate, args=(sweep, start, max(1, max_parallel)), daemon=True,
                     name=f"kale-{sweep.id}").start()
    return sweep


def _coordinate(sweep: Sweep, start, max_parallel: int) -> None:
    slots = threading.BoundedSemaphore(max_parallel)
    try:
        first = sweep.points[0]
        if not _launch(sweep, first, start, slots):
            return _give_up(sweep.points[1:], "the first point did not start")
        threading.Thread(target=_hold, args=(first.run, slots), daemon=True).start()
        problem = _shared_done(first.run, sweep.shared)
        if not problem and any(point.request.no_cache for point in sweep.points[1:]):
            problem = _shared_stored(first.run, sweep.shared)
        if problem:
            return _give_up(sweep.points[1:], problem)
        snapshot = first.run.state.ids.snapshot_id
        for point in sweep.points[1:]:  # the first point's files, and with --no-cache its shared steps
            point.request = replace(point.request, from_snapshot=snapshot or point.request.from_snapshot,
                                    resume=first.run.id if point.request.no_cache else point.request.resume)
        for point in sweep.points[1:]:  # started in grid order (the store lists them so), each when a slot frees
            if _launch(sweep, point, start, slots):
                threading.Thread(target=_hold, args=(point.run, slots), daemon=True).start()
    finally:
        for point in sweep.points:
            if point.run is not None:
                point.run.state.wait()
        sweep._finished.set()
        for listener in sweep.listeners:
            listener(sweep)


def _hold(run: Run, slots: threading.BoundedSemaphore) -> None:
    """Keep the run's slot until it ends."""
    run.state.wait()
    slots.release()


def _launch(sweep: Sweep, point: Point, start, slots: threading.BoundedSemaphore) -> bool:
    """Start ``point`` once a slot is free (it keeps the slot); False when it did not start (cancelled, or
    refused: the reason is its row's note, and its slot is free again)."""
    slots.acquire()
    try:
        if sweep._stop.is_set():
            raise KaleError("the sweep was cancelled before it started")
        point.run, engine = start(point.request)
    except BaseException as exc:  # noqa: BLE001 - said on the point's row; the other points go on
        point.note = str(exc) or type(exc).__name__
        slots.release()
        return False
    sweep._engines.append(engine)
    if sweep._stop.is_set():
        engine.cancel()
    for listener in sweep.listeners:
        listener(sweep)
    return True


def _shared_done(run: Run, shared: tuple[str, ...]) -> str:
    """Wait until the first point's shared steps are done: '' when they all succeeded, else why not."""
    if not shared:
        return ""
    changed = threading.Event()
    run.state.subscribe(lambda state, event: changed.set())
    while True:
        changed.clear()
        steps = run.state.steps
        bad = [n for n in shared if n in steps and steps[n].status in ("failed", "skipped")]
        if bad:
            return f"shared step '{bad[0]}' {steps[bad[0]].status} in the first point"
        if all(n in steps and steps[n].status in DONE for n in shared):
            return ""
        if run.state.ended is not None:
            return f"the first point ended {run.state.status} before its shared steps ran"
        changed.wait(1.0)  # an event wakes it; the timeout only guards a missed one


def _shared_stored(run: Run, shared: tuple[str, ...]) -> str:
    """Wait until the run store holds the first point's shared steps as done: a ``--resume`` reads them
    there, and the store's writer may lag behind the run's state (a busy machine, a locked database)."""
    from ..history.store import Recorder, RunStore
    from ..layout import KaleDir

    deadline, pause = time.monotonic() + Recorder.GIVE_UP, 0.01
    with RunStore(KaleDir.containing(run.run_dir.parents[1]).runs_db) as store:
        while True:
            record = store.find(run.id)
            stored = {s.name: s.status for s in record.steps} if record is not None else {}
            if all(stored.get(n) in DONE for n in shared):
                return ""
            if time.monotonic() > deadline:
                return "the run store has not recorded the first point's shared steps (--no-cache resumes from it)"
            time.sleep(pause)  # the writer says nothing when it is done: look again, less and less often
            pause = min(pause * 2, 0.5)


def _give_up(points: list[Point], why: str) -> None:
    for point in points:
        point.note = f"not started: {why}"
