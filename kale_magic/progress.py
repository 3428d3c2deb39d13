"""Plain-text progress: one line per task or step change, for terminals and nbconvert."""

from __future__ import annotations

from .state import RunState

ICONS = {"pending": "·", "running": "…", "done": "✓", "succeeded": "✓", "failed": "✗",
         "skipped": "-", "cached": "↺"}


class TextProgress:
    def __init__(self, write=print):
        self.write = write

    def __call__(self, state: RunState, event: str) -> None:
        kind, _, name = event.partition(":")
        if kind == "task":
            task = state.tasks[name]
            if task.status != "running":
                self.write(f"{ICONS[task.status]} {name}: {task.message}".rstrip(": "))
        elif kind == "step":
            step = state.steps[name]
            if step.status in ("succeeded", "cached"):
                self.write(f"  {ICONS[step.status]} {name} {step.status} in {step.duration:.2f} s")
            elif step.status == "failed":
                self.write(f"  {ICONS['failed']} {name} failed: {step.message}")
                if step.traceback:
                    self.write(step.traceback.rstrip())
            elif step.status == "skipped":
                self.write(f"  {ICONS['skipped']} {name} {step.message}")
        elif kind == "finished":
            tail = f": {state.error}" if state.error else ""
            metrics = ", ".join(f"{k}={v}" for k, v in state.metrics.items())
            self.write(f"Run {state.run_id} {state.status}{tail}" + (f" ({metrics})" if metrics else ""))
