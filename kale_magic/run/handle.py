"""The ``Run`` that ``%kale_run`` returns: a handle on one run's state and files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import KaleError
from ..layout import RunDir
from ..plan import Plan
from ..skips import skipped_by_condition
from .state import RunState


@dataclass(frozen=True)
class StepResult:
    status: str
    duration: float | None
    error: str = ""  # a failed step's error line; empty otherwise
    cached_from: str | None = None
    reason: str = ""  # why it ran although it could have been cached, or why it was skipped


class Run:
    def __init__(self, state: RunState, plan: Plan | None, run_dir: RunDir, pipeline_file: Path | None = None):
        self.state = state
        self.plan = plan
        self.files = RunDir(run_dir)
        self.pipeline_file = pipeline_file
        self.thread = None  # set by --background
        self.failure: Exception | None = None  # the error of the task that failed the run, if one did

    @property
    def run_dir(self) -> Path:
        """``.kale/runs/<id>``: everything this run wrote (see :mod:`kale_magic.layout`)."""
        return self.files.path

    @property
    def id(self) -> str:
        return self.state.run_id

    @property
    def status(self) -> str:
        return self.state.status

    @property
    def steps(self) -> dict[str, StepResult]:
        return {name: StepResult(s.status, s.duration, s.message if s.status == "failed" else "", s.cached_from,
                                 "" if s.status == "failed" else s.message)
                for name, s in self.state.steps.items()}

    @property
    def metrics(self) -> dict[str, object]:
        return dict(self.state.metrics)

    @property
    def links(self) -> dict[str, str]:
        return dict(self.state.links)

    def wait(self, timeout: float | None = None) -> "Run":
        self.state.wait(timeout)
        return self

    def notebook(self, step: str) -> Path:
        """The path of the executed step notebook (with its outputs), or of the generated one if the
        step has not run: a path opens in any frontend and reads with ``nbformat.read``."""
        self._check_step(step)
        executed = self.files.executed(step)
        return executed if executed.exists() else self.files.notebook(step)

    def load(self, name: str, step: str | None = None):
        """Load a value a step saved, by default from the last step that saved it."""
        producers = [t.producer for t in self.plan.transfers() if t.name == name] if self.plan else []
        if step is None:
            if not producers:
                raise KaleError(f"no step of run {self.id} saved '{name}': only values that flow between steps "
                                "are saved; pass step= to name the step, or check the name.")
            step = producers[-1]
        else:
            self._check_step(step)
        items = self.state.steps[step].items if step in self.state.steps else None
        if items is not None:  # a --foreach step saved one value per item: the list of those that ran, in order
            return [self._load(item.name, name, producers) for item in items if not skipped_by_condition(item)]
        if self.plan and step in self.plan.steps and self.plan.steps[step].foreach:  # items its engine found
            from .. import engines

            saved = engines.get(self.state.engine).saved_items(self.files, step)
            if saved is not None:
                return [self._load(label, name, producers) for label in saved]
        return self._load(step, name, producers)

    def _load(self, step: str, name: str, producers: list[str]):
        from .. import marshal
        from .debug import saved_value

        path = saved_value(self.files, self.state.engine, step, name)
        if path is None:
            state = self.state.steps.get(step)  # None for an item a KFP run's store listed (step[i])
            why = f", it was skipped ({state.message})" if state and state.status == "skipped" and state.message else ""
            raise KaleError(f"step '{step}' of run {self.id} did not save '{name}'{why}"
                            + (f" (saved by: {', '.join(producers)})" if producers else "") + ".")
        return marshal.load(path, name=name, step=step)

    def _check_step(self, step: str) -> None:
        if step not in self.state.steps:
            raise KaleError(f"run {self.id} has no step '{step}' (steps: {', '.join(self.state.steps)}).")

    def __repr__(self) -> str:
        parts = [f"{n}={s.status}" for n, s in self.state.steps.items()]
        metrics = "".join(f", {k}={v!r}" for k, v in self.state.metrics.items())
        return f"<Run {self.id} {self.status}: {' '.join(parts)}{metrics}>"
