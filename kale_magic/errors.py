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
    """The annotations cannot make a pipeline (names the cell or step and the fix)."""

    label = "Kale validation"


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
