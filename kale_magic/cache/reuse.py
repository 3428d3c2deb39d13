"""What the local engine asks before running a step: can an earlier result be reused?

:class:`StepCache` computes each step's key when the step is ready (its inputs'
checksums are known then), reuses a verified earlier result by hard-linking its
files into the new run (no copy of large data), and records every success as a
new entry.  :meth:`StepCache.predict` answers the same question before a run,
for ``%kale_run --cache-only-check`` and ``%kale_show``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import KaleError
from ..files import link_or_copy
from ..layout import KaleDir, RunDir, StepOutcome
from ..plan import Plan, StepPlan
from .index import CacheIndex
from .keys import digest, explain, key_parts
from .workspace import WorkspaceView, changed_files, snapshot_files

KEPT_LOCATIONS = 3  # runs whose copies of a result are remembered, newest first


@dataclass(frozen=True)
class Decision:
    step: str
    reuse_from: str | None  # the run that produced the reusable result, or None: the step runs
    reason: str = ""  # why it runs (empty for a first run)


class StepCache:
    """The cache as one run sees it; used from the engine's scheduling thread only."""

    def __init__(self, kale: KaleDir, pipeline: str, *, use_cache: bool = True, resume: str | None = None,
                 snapshot: WorkspaceView | None = None):
        self.kale = kale
        self.index = CacheIndex(kale)
        self.pipeline = pipeline
        self.use_cache = use_cache
        self.snapshot = snapshot  # the workspace files the steps see, when a snapshot is taken
        self.resume, self.resumed = self._resolve(resume)
        self.records: dict[tuple[str, str], dict] = {}  # (producer, name) -> marshal record, this run
        self.keys: dict[str, tuple[str, dict]] = {}  # step -> (key, parts)
        self.notes: dict[str, str] = {}  # step -> why it ran although it could have been cached

    def _resolve(self, resume: str | None) -> tuple[str | None, dict]:
        """``--resume`` with no id means the last failed run of this pipeline (from the run registry)."""
        if resume is None:
            return None, {}
        from ..history.store import RunStore

        with RunStore(self.kale.runs_db) as store:
            run_id = resume or store.last_failed(self.pipeline)
            if run_id is None:
                raise KaleError(f"--resume: pipeline '{self.pipeline}' has no failed run to resume; "
                                "name one with --resume RUN_ID (see %kale_runs).")
            record = store.find(run_id)
        if record is None or record.pipeline != self.pipeline:
            raise KaleError(f"--resume {run_id}: no such run of this notebook under {self.kale.path}; "
                            "check the id (see %kale_runs).")
        return record.run_id, {s.name: {"status": s.status, "key": s.cache_key} for s in record.steps}

    # the engine's calls ----------------------------------------------------------------------
    def key_of(self, name: str) -> str | None:
        """The step's cache key in this run, once it was ready (the run registry keeps it for --resume)."""
        return self.keys.get(name, (None, None))[0]

    def reuse(self, plan: Plan, name: str, run_dir: RunDir, parameters: dict, state) -> bool:
        """Mark step ``name`` cached in ``state`` and link its outputs into ``run_dir``, if possible."""
        step = plan.steps[name]
        inputs = {t.name: self.records.get((t.producer, t.name)) for t in step.inputs}
        if any(record is None for record in inputs.values()):
            return False  # an input was not saved through the cache's view (e.g. its producer failed)
        parts = key_parts(plan, name, parameters, inputs, self._fingerprint())
        key = digest(parts)
        self.keys[name] = (key, parts)
        decision, entry, location = self._decide(step, key, parts)
        if entry is None:
            if decision.reason:
                self.notes[name] = decision.reason
            return False
        try:
            for output in entry["outputs"]:
                _link_tree(self.index.value_dir(location, name, output), run_dir.value(name, output))
            links = self._link_reports(location, name, run_dir)
            run_dir.write_outcome(name, StepOutcome("cached", metrics=entry.get("metrics", {}),
                                                    saved=entry["outputs"]))
            self._touch(entry, state.run_id)
        except OSError as exc:
            self.notes[name] = f"could not link the cached outputs of run {entry['run_id']} ({exc}); running it again"
            return False
        self.records.update({(name, output): record for output, record in entry["outputs"].items()})
        state.add_metrics(entry.get("metrics", {}))
        state.step(name, "cached", cached_from=entry["run_id"], message=f"reused from run {entry['run_id']}",
                   cache_key=key, **links)
        return True

    def remember(self, plan: Plan, name: str, outcome, state) -> None:
        """Record a step that just succeeded as a cache entry."""
        step = plan.steps[name]
        saved = outcome.saved or {}
        for transfer in step.outputs:
            if transfer.name in saved:
                self.records[(name, transfer.name)] = saved[transfer.name]
        if outcome.status != "succeeded" or name not in self.keys:
            return
        if any(t.name not in saved for t in step.outputs):
            return
        key, parts = self.keys[name]
        entry = {
            "key": key, "pipeline": self.pipeline, "step": name, "run_id": state.run_id,
            "locations": [state.run_id], "created": time.time(), "used": time.time(),
            "duration": outcome.duration, "no_cache": step.options.no_cache, "parts": parts,
            "outputs": {t.name: saved[t.name] for t in step.outputs}, "metrics": outcome.metrics,
            "snapshot_id": self.snapshot.snapshot_id if self.snapshot else None,
        }
        try:
            self.index.put(entry)
        except OSError as exc:  # the run itself succeeded; only later reuse is lost
            self.notes[name] = f"not cached: {exc}"

    # before a run --------------------------------------------------------------------------------
    def predict(self, plan: Plan, parameters: dict) -> list[Decision]:
        """What a run would do now, step by step, without running or linking anything."""
        records: dict[tuple[str, str], dict] = {}
        out = []
        for name, step in plan.steps.items():
            waiting = [t.producer for t in step.inputs if (t.producer, t.name) not in records]
            if waiting:
                out.append(Decision(name, None, f"upstream step '{waiting[0]}' runs first, so its outputs "
                                                "may change"))
                continue
            inputs = {t.name: records[(t.producer, t.name)] for t in step.inputs}
            parts = key_parts(plan, name, parameters, inputs, self._fingerprint())
            decision, entry, _ = self._decide(step, digest(parts), parts, read_content=False)
            if entry is not None:
                records.update({(name, output): record for output, record in entry["outputs"].items()})
            out.append(decision)
        return out

    # deciding -----------------------------------------------------------------------------------
    def _decide(self, step: StepPlan, key: str, parts: dict,
                read_content: bool = True) -> tuple[Decision, dict | None, str | None]:
        before = self.resumed.get(step.name, {})
        resumable = before.get("key") == key and before.get("status") in ("succeeded", "cached")
        if not resumable and not self.use_cache:
            return Decision(step.name, None, "forced by --no-cache"), None, None
        if not resumable and step.options.no_cache:
            return Decision(step.name, None, f"forced by %%step {step.name} --no-cache"), None, None
        entry = self.index.entry(key)
        if entry is None:
            return Decision(step.name, None, self._why_new(step.name, parts)), None, None
        problem = "no run holds its files any more"
        for location in entry.get("locations", ()):
            problem = _verify(self.index, location, step.name, entry["outputs"], read_content)
            if problem is None:
                return Decision(step.name, entry["run_id"]), entry, location
        return Decision(step.name, None, f"cached outputs of run {entry['run_id']} are unusable ({problem}); "
                                         "running it again"), None, None

    def _why_new(self, name: str, parts: dict) -> str:
        before = self.resumed.get(name)
        if before and before.get("status") not in ("succeeded", "cached"):
            return f"{before.get('status', 'did not run')} in run {self.resume}"
        earlier = self.index.entry(before["key"]) if before and before.get("key") else None
        if earlier is not None:
            return f"changed since run {self.resume}: {explain(parts, earlier['parts'])}"
        latest = self.index.latest(self.pipeline, name)
        return explain(parts, latest["parts"], self._workspace_details(latest)) if latest else ""

    def _fingerprint(self) -> str | None:
        return self.snapshot.fingerprint if self.snapshot else None

    def _workspace_details(self, entry: dict) -> dict[str, str]:
        """Name the files that changed since the entry's snapshot, when both are known."""
        before = snapshot_files(self.kale.snapshots, entry.get("snapshot_id"))
        if self.snapshot is None or before is None:
            return {}
        return {"snapshot": f"workspace files changed: {changed_files(before, self.snapshot)}"}

    def _touch(self, entry: dict, run_id: str) -> None:
        locations = [run_id] + [r for r in entry.get("locations", ()) if r != run_id]
        self.index.put({**entry, "locations": locations[:KEPT_LOCATIONS], "used": time.time()})

    def _link_reports(self, location: str, name: str, run_dir: RunDir) -> dict:
        """The earlier executed notebook and log, linked into this run so it reads complete."""
        links = {}
        source = self.kale.run(location)
        for field, path in (("notebook", RunDir.executed), ("log", RunDir.log)):
            target = path(run_dir, name)
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                link_or_copy(path(source, name), target)
                links[field] = str(target)
            except OSError:
                continue
        return links


# files ------------------------------------------------------------------------------------------

def _verify(index: CacheIndex, run_id: str, step: str, outputs: dict, read_content: bool = True) -> str | None:
    """None when every output of the entry is present with the content it had; else what is wrong.

    Without ``read_content`` (previews) only records and sizes are compared, so that
    ``%kale_show`` does not read gigabytes; a run always reads and hashes every file.
    """
    from ..marshal import hashing
    from ..marshal.store import RECORD_FILE

    for name, record in outputs.items():
        folder = index.value_dir(run_id, step, name)
        try:
            on_disk = json.loads((folder / RECORD_FILE).read_text())
        except (OSError, ValueError):
            return f"'{name}' is missing"
        if on_disk.get("checksum") != record.get("checksum"):
            return f"'{name}' was replaced"
        for filename, expected in record["files"].items():
            try:
                if (folder / filename).stat().st_size != expected["size"]:
                    return f"'{name}' is corrupted ({filename} has the wrong size)"
                if read_content and hashing.file_digest(folder / filename)[1] != hashing.digest_of(expected):
                    return f"'{name}' is corrupted ({filename} does not match its checksum)"
            except (OSError, hashing.ChecksumMismatch):
                return f"'{name}' is missing {filename}"
    return None


def _link_tree(source: Path, target: Path) -> None:
    """Link a saved value's directory into place atomically, like marshal publishes one."""
    temp = target.with_name(f".{target.name}.{os.getpid()}.link")
    shutil.rmtree(temp, ignore_errors=True)
    for file in sorted(p for p in source.rglob("*") if p.is_file()):
        destination = temp / file.relative_to(source)
        destination.parent.mkdir(parents=True, exist_ok=True)
        link_or_copy(file, destination)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        shutil.rmtree(target)
    os.replace(temp, target)


def check_text(decisions: list[Decision]) -> str:
    """``--cache-only-check``: which steps a run would reuse, and why the others would run."""
    reused = sum(1 for d in decisions if d.reuse_from)
    width = max((len(d.step) for d in decisions), default=0)
    lines = [f"Cache: {reused} of {len(decisions)} steps would be reused"]
    for d in decisions:
        if d.reuse_from:
            lines.append(f"  ↺ {d.step:<{width}}  reuse the result of run {d.reuse_from}")
        else:
            lines.append(f"  ▶ {d.step:<{width}}  run: {d.reason or 'no cached result yet'}")
    return "\n".join(lines)
