"""Where everything kale-magic writes lives: the one owner of every path under ``.kale/``.

::

    .kale/                           next to the notebook (KaleDir)
      runs.db                        the run registry (kale_magic.history)
      runs/<run-id>/                 one run (RunDir)
        validation.txt               the plan as text
        flows.json                   step -> the parameters and values (with producers) it loads, the values
                                     it saves (%kale_debug reads it)
        kfp-values.json              KFP runs: step -> value -> the object-store URL of its artifact
        kfp-steps.json               KFP runs: step -> its identity (a later partial run reuses matching ones)
        notebooks/<step>.ipynb       generated step notebooks
        executed/<step>.ipynb        the same with their outputs
        logs/<step>.log              stdout/stderr, streamed while the step runs
        data/<step>/<name>/          values a step saved (a marshal directory)
        steps/<step>.json            the step's outcome (StepOutcome)
        steps/<step>.metrics.json    the metrics it logged
        workspace/                   the snapshot the local steps work in
      cache/entries/<key>.json       step cache entries (kale_magic.cache); <key> is <base>-<files>
      cache/hashes.json              remembered hashes of files steps read in place (--no-snapshot)
      snapshots/                     the workspace snapshot store (its inside belongs to kale_magic.snapshot)
      pipelines/<pipeline>.yaml      compiled KFP pipelines
    kale-notebooks/                  beside .kale/: copies of run notebooks opened in JupyterLab (the
                                     server extension writes them; a .gitignore keeps them out of git
                                     and of snapshots)

No other module spells these names: they ask a ``KaleDir`` or a ``RunDir``.  A KFP
step uses a ``RunDir`` in its container's temporary folder, so both engines write
the same files.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from glob import escape as glob_escape
from pathlib import Path

KALE_DIR = ".kale"
OPENED_DIR = "kale-notebooks"
# What writers name the hidden sibling they write before renaming it into place (files.replacing,
# marshal values, cache links): ".<name>.<random>.tmp", ".<name>.<pid>.link", and "<that>.old".
_WRITER_TEMP = re.compile(r"\..+\.(tmp|link|old)")


@dataclass
class StepOutcome:
    """``steps/<step>.json``: how a step ended, written by the step's process (or the cache)."""

    status: str  # "succeeded", "failed" or "cached"
    error: str = ""  # one line: "ZeroDivisionError: division by zero"
    traceback: str = ""
    metrics: dict = field(default_factory=dict)
    duration: float = 0.0
    saved: dict = field(default_factory=dict)  # name -> marshal record
    # workspace files the step read (kale_magic.step.reads): {"files": [path], "listings": {folder:
    # digest}, "changed": [path read, then changed before the step ended]}
    reads: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), default=str)

    @classmethod
    def from_json(cls, text: str) -> "StepOutcome":
        return cls(**json.loads(text))


class RunDir:
    """The files of one run."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def validation(self) -> Path:
        return self.path / "validation.txt"

    @property
    def flows(self) -> Path:
        return self.path / "flows.json"

    @property
    def notebooks(self) -> Path:
        return self.path / "notebooks"

    @property
    def data(self) -> Path:
        return self.path / "data"

    @property
    def workspace(self) -> Path:
        return self.path / "workspace"

    def notebook(self, step: str) -> Path:
        return self.notebooks / f"{step}.ipynb"

    def executed(self, step: str) -> Path:
        return self.path / "executed" / f"{step}.ipynb"

    def log(self, step: str) -> Path:
        return self.path / "logs" / f"{step}.log"

    def value(self, step: str, name: str) -> Path:
        return self.data / step / name

    def outcome_file(self, step: str) -> Path:
        return self.path / "steps" / f"{step}.json"

    def metrics_file(self, step: str) -> Path:
        return self.path / "steps" / f"{step}.metrics.json"

    @property
    def remote_values(self) -> Path:
        """``kfp-values.json``: step -> name -> object-store URL of a value a KFP run's step saved."""
        return self.path / "kfp-values.json"

    @property
    def remote_items(self) -> Path:
        """``kfp-items.json``: ``--foreach`` step -> ``{"count": N}``, its items whose values a KFP run's
        store holds (as ``step[i]`` in :attr:`remote_values`), or ``{"error": why}`` when they do not add up."""
        return self.path / "kfp-items.json"

    @property
    def step_identities(self) -> Path:
        """``kfp-steps.json``: step -> its identity in a KFP run (code, parameters, inputs' producers), which a
        later KFP partial run matches before importing the step's values (kale_magic.engines.kfp.reuse)."""
        return self.path / "kfp-steps.json"

    def items(self, step: str) -> list[int]:
        """The items of ``--foreach`` step ``step`` this run has files of (an outcome, values or a KFP
        value's URL), by index: its instances are named ``step[i]``."""
        pattern = re.compile(re.escape(step) + r"\[(\d+)\]")
        names = [p.stem for p in (self.path / "steps").glob(f"{glob_escape(step)}[[]*].json")]
        names += [p.name for p in self.data.glob(f"{glob_escape(step)}[[]*]") if p.is_dir()]
        try:
            names += list(json.loads(self.remote_values.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            pass
        return sorted({int(m.group(1)) for m in map(pattern.fullmatch, names) if m})

    def leftovers(self) -> list[Path]:
        """Temporary files and folders of writers killed half way in this run (never inside its workspace)."""
        folders = [self.path, self.notebooks, self.path / "executed", self.path / "logs", self.path / "steps",
                   self.data]
        if self.data.is_dir():
            folders += [p for p in self.data.iterdir() if p.is_dir() and not _WRITER_TEMP.fullmatch(p.name)]
        found = []
        for folder in folders:
            if folder.is_dir():
                found += [p for p in folder.iterdir() if _WRITER_TEMP.fullmatch(p.name)]
        return sorted(found)

    def make_step_dirs(self) -> None:
        for folder in ("executed", "logs", "steps", "data"):
            (self.path / folder).mkdir(parents=True, exist_ok=True)

    def write_outcome(self, step: str, outcome: StepOutcome) -> None:
        from .files import atomic_write

        atomic_write(self.outcome_file(step), outcome.to_json())

    def read_outcome(self, step: str) -> StepOutcome | None:
        try:
            return StepOutcome.from_json(self.outcome_file(step).read_text(encoding="utf-8"))
        except (OSError, ValueError, TypeError):
            return None

    def __fspath__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"


class KaleDir:
    """``<root>/.kale``: the runs, cache, snapshots and pipelines of the notebooks in ``root``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.path = self.root / KALE_DIR

    @classmethod
    def containing(cls, path: str | Path) -> "KaleDir":
        """The KaleDir whose ``.kale`` folder is ``path`` itself."""
        path = Path(path)
        if path.name != KALE_DIR:
            raise ValueError(f"{path} is not a {KALE_DIR} folder")
        return cls(path.parent)

    @property
    def runs_db(self) -> Path:
        return self.path / "runs.db"

    @property
    def runs(self) -> Path:
        return self.path / "runs"

    @property
    def snapshots(self) -> Path:
        return self.path / "snapshots"

    @property
    def cache_entries(self) -> Path:
        return self.path / "cache" / "entries"

    def cache_entry(self, key: str) -> Path:
        return self.cache_entries / f"{key}.json"

    def cache_variants(self, base: str) -> list[Path]:
        """The entries whose key starts with ``base`` (one per set of files the step read)."""
        return sorted(self.cache_entries.glob(f"{base}-*.json")) if self.cache_entries.is_dir() else []

    @property
    def cache_hashes(self) -> Path:
        return self.path / "cache" / "hashes.json"

    def run(self, run_id: str) -> RunDir:
        return RunDir(self.runs / run_id)

    def run_dirs(self) -> list[RunDir]:
        return [RunDir(p) for p in sorted(self.runs.iterdir()) if p.is_dir()] if self.runs.is_dir() else []

    def pipeline_file(self, pipeline: str) -> Path:
        return self.path / "pipelines" / f"{pipeline}.yaml"

    @property
    def opened(self) -> Path:
        """Visible copies of run notebooks: JupyterLab opens files through a contents manager that, in a
        server started the default way, refuses anything under a hidden folder such as ``.kale/``."""
        return self.root / OPENED_DIR

    def opened_copy(self, path: str | Path) -> Path:
        """Where the copy of ``path`` (a file under this ``.kale/``) goes: the same path below :attr:`opened`."""
        return self.opened / Path(path).relative_to(self.path)

    def exists(self) -> bool:
        return self.path.is_dir()

    def __repr__(self) -> str:
        return f"KaleDir({str(self.root)!r})"
