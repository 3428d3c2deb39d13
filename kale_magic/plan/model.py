"""The data-flow plan: what each step runs, reads, receives and sends.

Built by :mod:`kale_magic.plan.analysis` from the recorded cells and the live
namespace; consumed by the notebook builder, the engines and the compiler.
It holds no live objects, only names and type descriptions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .session import StepOptions


@dataclass(frozen=True)
class Transfer:
    """One value saved by ``producer`` and loaded by the steps that need it."""

    name: str
    producer: str
    backend: str  # marshal backend chosen from the live value's type
    type_name: str  # e.g. "numpy.ndarray"
    artifact_type: str = "Artifact"  # KFP artifact class: Dataset, Model or Artifact
    size: int | None = None  # bytes, when cheaply known (no serialization)


@dataclass(frozen=True)
class Foreach:
    """A step's ``--foreach VAR in NAME``: it runs once per item of NAME with VAR bound to the item."""

    var: str
    name: str
    producer: str | None  # the step that produces NAME; None: NAME is a parameter
    head: str  # the first step of this clause's chain: the steps of one chain share their items
    continues: tuple[str, ...] = ()  # same-clause parents: item i of this step runs after their item i
    reads_all: bool = False  # the body reads NAME itself, not only its item: each item's key covers NAME


@dataclass(frozen=True)
class StepPlan:
    name: str
    cells: tuple[str, ...]  # the step's code, one entry per cell, as typed
    parents: tuple[str, ...]  # direct upstream steps
    parameters: tuple[str, ...]  # pipeline parameters this step reads
    inputs: tuple[Transfer, ...]  # values it loads (each names its producer)
    outputs: tuple[Transfer, ...]  # values it saves for later steps
    metrics: tuple[str, ...]  # metrics computed at the end of this step
    options: StepOptions = field(default_factory=StepOptions)
    foreach: Foreach | None = None

    def itemwise(self, producer: str, plan: "Plan") -> bool:
        """True when this step loads ``producer``'s values item by item (same clause), False when as lists."""
        other = plan.steps[producer].foreach
        return bool(self.foreach and other and other.head == self.foreach.head)
    # --if: what its condition reads, evaluated before the step runs (not inputs: they do not key its cache)
    condition_parameters: tuple[str, ...] = ()
    condition_inputs: tuple[Transfer, ...] = ()


@dataclass
class Plan:
    pipeline: str
    steps: dict[str, StepPlan]  # topological order, ties broken by notebook order
    imports: tuple[str, ...] = ()  # %%imports cells, as typed
    functions: tuple[str, ...] = ()  # %%functions cells, as typed
    parameters: dict[str, object] = field(default_factory=dict)  # name -> literal default
    metrics: tuple[str, ...] = ()
    experiment: str = "Default"
    description: str = ""
    notebook_path: Path | None = None
    order_source: str = "execution order"  # or "notebook file <path>"
    notes: tuple[str, ...] = ()  # what validation could not tell, with the fix (not problems: the run goes on)

    def edges(self) -> list[tuple[str, str, tuple[str, ...]]]:
        """(parent, child, names that flow from parent to child), parents' edges first."""
        out = []
        for step in self.steps.values():
            for parent in step.parents:
                names = tuple(t.name for t in step.inputs if t.producer == parent)
                out.append((parent, step.name, names))
        return out

    def flows(self) -> list[tuple[str, str, tuple[str, ...]]]:
        """Every producer -> consumer pair, with the names that flow: the parent -> child edges, and per
        step a *long* edge from each ancestor whose values it loads directly, skipping a generation
        (``X_test`` from ``features`` to ``evaluate`` past ``train``).  What the pictures draw.  The values an
        ``--if`` reads flow too (into its gate, not its cell), after the step's own inputs."""
        out = []
        for step in self.steps.values():
            read = step.inputs + tuple(t for t in step.condition_inputs
                                       if (t.producer, t.name) not in {(i.producer, i.name) for i in step.inputs})
            out += [(parent, step.name, tuple(t.name for t in read if t.producer == parent))
                    for parent in step.parents]
            skipping: dict[str, list[str]] = {}
            for t in read:
                if t.producer not in step.parents:
                    skipping.setdefault(t.producer, []).append(t.name)
            out += [(producer, step.name, tuple(names)) for producer, names in skipping.items()]
        return out

    def transfers(self) -> list[Transfer]:
        return [t for step in self.steps.values() for t in step.outputs]
