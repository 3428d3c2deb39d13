"""Errors users see.

Mistakes in the notebook are shown as one sentence with no traceback: IPython
calls ``_render_traceback_`` instead of formatting the stack.  Internal bugs are
ordinary exceptions and keep their traceback.
"""


class KaleError(Exception):
    """A user mistake or an environment problem, shown without a traceback."""

    label = "Kale"

    def _render_traceback_(self):
        return [f"{self.label}: {self}"]


class ValidationError(KaleError):
    """The annotations cannot make a pipeline: every problem found, one sentence each naming the cell
    or step and the fix, the most fundamental first, so one round trip shows them all."""

    label = "Kale validation"

    def __init__(self, *problems: str):
        super().__init__(*problems)
        self.problems = list(problems)

    def __str__(self) -> str:
        if len(self.problems) == 1:
            return self.problems[0]
        return f"{len(self.problems)} problems, the most fundamental first:\n" + "\n".join(
            f"  {number}. {problem}" for number, problem in enumerate(self.problems, 1))

    def _render_traceback_(self):
        return f"{self.label}: {self}".split("\n")


class MarshalError(KaleError):
    """A value could not be saved or loaded between steps."""

    label = "Kale marshalling"


class UnmarshallableError(MarshalError):
    """A value's type can never move between steps (open files, generators, locks, ...)."""


class EngineError(KaleError):
    """A pipeline could not be run (configuration, connection, server answer)."""

    label = "Kale engine"


class MissingDependency(KaleError):
    """An optional library is needed; the message carries the pip line that fixes it."""

    label = "Kale"

    def __init__(self, package, purpose):
        super().__init__(f"{purpose} needs the '{package}' package: pip install {package}")
        self.package = package


class RunFailed(KaleError):
    """A run failed: raised after its panel showed what happened, so "Run All" stops there as at a
    failed cell.  ``str()`` is the run's error; ``run`` is the failed Run; the error of a task that
    failed the run is the ``__cause__``.  The traceback points at the panel instead of repeating it."""

    def __init__(self, run):
        super().__init__(run.state.error)
        self.run = run

    def _render_traceback_(self):
        return [f"{self.label}: run {self.run.id} failed (shown above), so the notebook stops here; "
                "kale_magic.last_run() returns it, and %config Kale.stop_on_failure = False lets the "
                "cells after a failed run go on."]
