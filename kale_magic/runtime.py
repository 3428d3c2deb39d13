"""Old path of the step runtime, imported by step notebooks generated before the package was layered."""

from .step.runtime import StepContext, load_inputs, log_metrics, save_outputs  # noqa: F401
