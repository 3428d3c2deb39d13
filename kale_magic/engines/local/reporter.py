"""How a local run is told: the engine's one writer of its :class:`~kale_magic.run.state.RunState`.

Every step status, metric and warm-up note of a local run goes through a
:class:`Reporter`, called from the engine's loop only, so a step's row is written in
one place: the cache decides and links, the executor runs and kills, and this says so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...layout import RunDir, StepOutcome
from ...plan.selection import NOT_SELECTED
from .scheduler import StepInstance

if TYPE_CHECKING:  # engines report into a run's state; the run package drives them
    from ...cache.reuse import Reused
    from ...run.state import RunState


class Reporter:
    def __init__(self, state: RunState, run_dir: RunDir):
        self.state = state
        self.run_dir = run_dir
        self._warming: StepInstance | None = None  # submitted before the worker had imported its modules

    def cached(self, instance: StepInstance, reused: Reused, unselected: bool = False) -> None:
        """``unselected``: a step a partial run left out, whose values a selected step loads."""
        self.state.add_metrics(reused.metrics)
        note = f" ({NOT_SELECTED})" if unselected else ""
        self.state.step(instance.step, "cached", cached_from=reused.run_id, cache_key=reused.key,
                        message=f"reused from run {reused.run_id}{note}", **reused.links)

    def unusable(self, instance: StepInstance, why: str) -> None:
        """A step a partial run must reuse whose earlier result went away after the run was checked."""
        name = instance.step
        self.state.step(name, "failed", message=f"step '{name}' is {NOT_SELECTED} and could not be reused "
                                                f"({why}); run it with %kale_run --to {name}")

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
        name = instance.step
        self.state.step(name, "running", log=str(self.run_dir.log(name)), notebook=str(self.run_dir.executed(name)))

    def ended(self, instance: StepInstance, outcome: StepOutcome, started: float, note: str,
              cache_key: str | None) -> None:
        """``note``: what the cache says about a step that ran (shown unless the step failed)."""
        self.state.add_metrics(outcome.metrics)
        self.state.step(instance.step, outcome.status, started=started, message=outcome.error or note,
                        traceback=outcome.traceback, cache_key=cache_key)

    def skipped(self, why: dict[StepInstance, str]) -> None:
        for instance, message in why.items():
            self.state.step(instance.step, "skipped", message=message)

    def error_of(self, instance: StepInstance) -> str:
        return self.state.steps[instance.step].message
