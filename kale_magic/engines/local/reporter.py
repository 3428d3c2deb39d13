"""How a local run is told: the engine's one writer of its :class:`~kale_magic.run.state.RunState`.

Every step status, metric and warm-up note of a local run goes through a
:class:`Reporter`, called from the engine's loop only, so a step's row is written in
one place: the cache decides and links, the executor runs and kills, and this says so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...layout import RunDir, StepOutcome
from ...plan.selection import NOT_SELECTED
from ... import skips
from .scheduler import StepInstance

if TYPE_CHECKING:  # engines report into a run's state; the run package drives them
    from ...cache.reuse import Reused
    from ...run.state import RunState


class Reporter:
    def __init__(self, state: RunState, run_dir: RunDir):
        self.state = state
        self.run_dir = run_dir
        self._warming: StepInstance | None = None  # submitted before the worker had imported its modules

    def _set(self, instance: StepInstance, status: str, **changes) -> None:
        """A step's row, or an item's (the step adds its items up)."""
        if instance.item is None:
            self.state.step(instance.step, status, **changes)
        else:
            self.state.item(instance.step, instance.item, status, **changes)

    def cached(self, instance: StepInstance, reused: Reused, unselected: bool = False) -> None:
        """``unselected``: a step a partial run left out, whose values a selected step loads."""
        if reused.metrics:
            self.state.add_metrics(reused.metrics)
        note = f" ({NOT_SELECTED})" if unselected else ""
        self._set(instance, "cached", cached_from=reused.run_id, cache_key=reused.key,
                  message=f"reused from run {reused.run_id}{note}", skip=skips.NOT_SELECTED if unselected else "",
                  **reused.links)

    def unusable(self, instance: StepInstance, why: str) -> None:
        """A step a partial run must reuse whose earlier result went away after the run was checked."""
        name = instance.step
        self.state.step(name, "failed", message=f"step '{name}' is {NOT_SELECTED} and could not be reused "
                                                f"({why}); run it with %kale_run --to {name}")

    def fanned_out(self, step: str, count: int) -> None:
        """``step`` (``--foreach``) runs as ``count`` items."""
        self.state.fan_out(step, count)

    def failed(self, instance: StepInstance, message: str) -> None:
        """``instance`` failed before it could run (a foreach step whose value cannot be looped over)."""
        self._set(instance, "failed", message=message)

    def warming(self, instance: StepInstance, importing: bool) -> None:
        """``instance`` waits for the warm worker (cold imports cost more than waiting): said once a run."""
        if self._warming is not None:
            return
        self._warming = instance
        self.state.task("Run", "running", "waiting for the warm worker to import the notebook's modules"
                        if importing else "waiting for the warm worker to start")

    def started(self, instance: StepInstance) -> None:
        if instance == self._warming:
            self.state.task("Run", "running", "")
        label = str(instance)
        self._set(instance, "running", log=str(self.run_dir.log(label)), notebook=str(self.run_dir.executed(label)))

    def ended(self, instance: StepInstance, outcome: StepOutcome, started: float, note: str,
              cache_key: str | None) -> None:
        """``note``: what the cache says about a step that ran (shown unless the step failed)."""
        if outcome.metrics:  # an event (every view and the store hear it) only when there are some
            self.state.add_metrics(outcome.metrics)
        self._set(instance, outcome.status, started=started, message=outcome.error or note,
                  traceback=outcome.traceback, cache_key=cache_key)

    def gated(self, instance: StepInstance, status: str, why: str) -> None:
        """``instance`` never started: its ``--if`` was false (skipped) or raised (failed), saying why."""
        self._set(instance, status, message=why, skip=skips.CONDITION if status == "skipped" else "")

    def skipped(self, why: dict[StepInstance, skips.Skip]) -> None:
        for instance, skip in why.items():
            self._set(instance, "skipped", message=skip.message, skip=skip.kind)

    def error_of(self, instance: StepInstance) -> str:
        return self.state.steps[instance.step].message
