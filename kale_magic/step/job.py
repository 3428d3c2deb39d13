"""What a local step's process receives: a typed, versioned :class:`StepJob`.

The engine builds one per step instance and the warm worker hands it, as JSON, to
the forked step process.  Every file the step reads or writes is named by the run's
:class:`~kale_magic.layout.RunDir` methods, never by path strings the engine spelled
out (Metaflow hands a task its ``TaskDataStore`` the same way), and the plan's
marshal backend for each output travels with it to ``save``.  A job of another
version (a worker left over from an older kale-magic in a long-lived kernel) is
refused with a sentence, not misread.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from ..layout import RunDir

VERSION = 2  # 2: items of --foreach steps (label, item, inputs saved by several instances)


class StepJobError(ValueError):
    """A job this runtime cannot read."""


@dataclass(frozen=True)
class StepJob:
    step: str
    notebook: str  # the step notebook to execute
    run: str  # the run's folder (a RunDir)
    cwd: str  # where the step works: the run's snapshot of the notebook's folder, or that folder
    # value name -> the instance that saved it ("prep", or "train[2]" for the same item of a --foreach step),
    # or the list of the instances that did (every item of a --foreach step: the value loads as a list)
    inputs: dict[str, str | list[str]] = field(default_factory=dict)
    producers: dict[str, str] = field(default_factory=dict)  # value name -> the step that produces it
    outputs: tuple[str, ...] = ()
    backends: dict[str, str] = field(default_factory=dict)  # output -> the marshal backend the plan chose
    env: dict[str, str] = field(default_factory=dict)
    sys_path: tuple[str, ...] = ()
    item: int | None = None  # which item of its --foreach clause this instance runs
    version: int = VERSION

    @property
    def name(self) -> str:
        """The instance's name in the run's folder: the step, or ``step[i]`` for one of its items."""
        return self.step if self.item is None else f"{self.step}[{self.item}]"

    @property
    def run_dir(self) -> RunDir:
        return RunDir(self.run)

    def context(self):
        """The data cells' view of this job: where each value is loaded from and saved to."""
        from .runtime import StepContext

        run = self.run_dir

        def saved(name: str, source: str | list[str]) -> str | list[str]:
            if isinstance(source, list):
                return [str(run.value(instance, name)) for instance in source]
            return str(run.value(source, name))

        return StepContext(step=self.step,
                           inputs={name: saved(name, source) for name, source in self.inputs.items()},
                           producers=dict(self.producers),
                           outputs={name: str(run.value(self.name, name)) for name in self.outputs},
                           metrics_path=str(run.metrics_file(self.name)), backends=dict(self.backends),
                           item=self.item)

    def to_dict(self) -> dict:
        """Its fields as JSON-ready data; shallow (asdict's deep copy of the environment cost milliseconds
        per step instance): the job is frozen and its dict only serialized."""
        return {**{f.name: getattr(self, f.name) for f in fields(self)}, "outputs": list(self.outputs),
                "sys_path": list(self.sys_path)}

    @classmethod
    def from_dict(cls, data: dict) -> "StepJob":
        version = data.get("version")
        if version != VERSION:
            raise StepJobError(f"step '{data.get('step', '?')}' was sent a job of version {version} but this "
                               f"kale-magic reads version {VERSION}: the warm worker is from another kale-magic; "
                               "restart the kernel")
        return cls(**{**data, "outputs": tuple(data["outputs"]), "sys_path": tuple(data["sys_path"])})


def write_refusal(data: dict, why: str) -> None:
    """A job that could not be read still ends with an outcome, when it says where its run is."""
    from ..layout import StepOutcome

    if isinstance(data.get("run"), str) and isinstance(data.get("step"), str):
        RunDir(Path(data["run"])).write_outcome(data["step"], StepOutcome("failed", error=why))
