"""Planning: recorded cells, their analysis, and the validated :class:`Plan` of a pipeline.

Nothing here runs a step or writes a file; the plan holds names and type
descriptions only, so every engine and the compiler can consume it.
"""

from .model import Plan, StepPlan, Transfer

__all__ = ["Plan", "StepPlan", "Transfer"]
