"""What the local engine asks before running a step: can an earlier result be reused?

:class:`StepCache` computes each step's base key when the step is ready (its
inputs' checksums are known then), looks among the entries of that base for one
whose files are what the step would read now, reuses its verified result by
hard-linking its files into the new run (no copy of large data), and records
every success as a new entry, with the files the step read.
:meth:`StepCache.predict` answers the same question before a run, for
``%kale_run --cache-only-check`` and ``%kale_show``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import KaleError
from ..files import link_or_copy
from ..layout import KaleDir, RunDir, StepOutcome
from ..plan import Plan, StepPlan
from .index import CacheIndex
from .keys import digest, entry_key, explain, key_parts, step_parts
from .workspace import WorkspaceFiles

KEPT_LOCATIONS = 3  # runs whose copies of a result are remembered, newest first


@dataclass(frozen=True)
class Reused:
    """A step served from the cache: the run whose outputs were linked, the key, its metrics, report links."""

    run_id: str
    key: str
    metrics: dict
    links: dict


@dataclass(frozen=True)
class Decision:
    step: str
    reuse_from: str | None  # the run that produced the reusable result, or None: the step runs
    reason: str = ""  # why it runs (empty for a first run)
    reused: Reused | None = None  # what :meth:`StepCache.reuse` linked into the run, for the engine to report


class StepCache:
    """The cache as one run sees it; used from the engine's scheduling thread only."""

    def __init__(self, kale: KaleDir, pipeline: str, files: WorkspaceFiles, *, use_cache: bool = True,
                 resume: str | None = None):
        self.kale = kale
        self.index = CacheIndex(kale)
        self.pipeline = pipeline
        self.use_cache = use_cache
        self.files = files  # where the steps find the workspace files they read
        self.resume, self.resumed = self._resolve(resume)
        self.records: dict[tuple[str, str], dict] = {}  # (producer, name) -> marshal record, this run
        self.keys: dict[str, tuple[str, dict]] = {}  # step -> (key, parts); the base until files are known
        self.pinned: frozenset[str] = frozenset()  # steps a partial run reuses whatever --no-cache says
        self.fanned: dict[str, list[str]] = {}  # foreach step -> its items' digests, as the engine fanned it out
        self._constant: tuple[Plan | None, dict[str, dict]] = (None, {})  # the plan, and each step's step_parts
        self.dropped: set[str] = set()  # items a false --if skipped (``train[2]``): the lists leave them out

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
    def key_of(self, name: str, item: int | None = None) -> str | None:
        """The step's cache key in this run, once it was ready (the run registry keeps it for --resume)."""
        return self.keys.get(_label(name, item), (None, None))[0]

    def reuse(self, plan: Plan, name: str, run_dir: RunDir, parameters: dict, run_id: str,
              item: int | None = None) -> Decision:
        """Link step ``name``'s cached outputs (of its ``item``, for a foreach step) into ``run_dir`` (run
        ``run_id``) if it can be reused.  The decision says what was reused, for the engine to report, or
        why the step must run.  An item's key holds its value's digest as well."""
        step, label = plan.steps[name], _label(name, item)
        # an item is keyed on its item, not on all of them: a new item leaves the others cached
        leave_out = frozenset({step.foreach.name}) if item is not None and not step.foreach.reads_all else frozenset()
        inputs = {t.name: self._input(plan, step, t, item) for t in step.inputs if t.name not in leave_out}
        if any(record is None for record in inputs.values()):
            return Decision(name, None)  # an input was not saved through the cache's view (its producer failed)
        parts = key_parts(plan, name, parameters, inputs, leave_out=leave_out, constant=self._step_parts(plan, name))
        if item is not None:
            parts["item"] = self.fanned[name][item]
        base = digest(parts)
        self.keys[label] = (base, parts)
        decision, entry, location = self._decide(step, base, parts, label=label)
        if entry is None:
            return decision
        source = entry.get("step", label)  # an item may have had another place among the items then
        try:
            for output in entry["outputs"]:
                _link_tree(self.index.value_dir(location, source, output), run_dir.value(label, output))
            links = self._link_reports(location, label, run_dir, source)
            run_dir.write_outcome(label, StepOutcome("cached", metrics=entry.get("metrics", {}),
                                                     saved=entry["outputs"]))
            if source == label:  # this run's copy is where later runs look for it
                self._touch(entry, run_id)
        except OSError as exc:
            return Decision(name, None, f"could not link the cached outputs of run {entry['run_id']} ({exc}); "
                                        "running it again")
        self.records.update({(label, output): record for output, record in entry["outputs"].items()})
        self.keys[label] = (entry["key"], parts)
        return replace(decision, reused=Reused(entry["run_id"], entry["key"], entry.get("metrics", {}), links))

    def _step_parts(self, plan: Plan, name: str) -> dict[str, str]:
        """The parts of a step's key that are the same for each of its items: computed once per plan (parsing
        its code and the %%functions for every item cost milliseconds each)."""
        if self._constant[0] is not plan:
            self._constant = (plan, {})
        known = self._constant[1]
        if name not in known:
            known[name] = step_parts(plan, name)
        return known[name]

    def _input(self, plan: Plan, step: StepPlan, transfer, item: int | None) -> dict | None:
        """The marshal record of an input: its producer's, the same item's of a step it continues, or one
        record standing for the list of a looping producer's items that ran (their checksums in order)."""
        producer = transfer.producer
        if producer not in self.fanned:
            return self.records.get((producer, transfer.name))
        if step.itemwise(producer, plan):
            return self.records.get((_label(producer, item), transfer.name))
        labels = [_label(producer, i) for i in range(len(self.fanned[producer]))]
        records = [self.records.get((label, transfer.name)) for label in labels if label not in self.dropped]
        if any(record is None for record in records):
            return None
        return {"checksum": digest({str(i): r["checksum"] for i, r in enumerate(records)}),
                "backend": records[0]["backend"] if records else None}

    def remember(self, plan: Plan, name: str, outcome, run_id: str, ran_because: str = "",
                 item: int | None = None) -> str:
        """Record a step (or an item of one) that just succeeded as a cache entry, keyed on the files it read
        too.  Returns what its row says about the cache: why it ran (``ran_because``, its decision's reason),
        or why it was not cached, and how it was keyed."""
        step, label = plan.steps[name], _label(name, item)
        saved = outcome.saved or {}
        for transfer in step.outputs:
            if transfer.name in saved:
                self.records[(label, transfer.name)] = saved[transfer.name]
        if outcome.status != "succeeded" or label not in self.keys:
            return ran_because
        if any(t.name not in saved for t in step.outputs):
            return ran_because
        reads = outcome.reads or {}
        if reads.get("changed"):
            return (f"not cached: {', '.join(reads['changed'])} changed while the step ran (it reads "
                    "what it writes, or something else wrote it)")
        base, parts = self.keys[label]
        files = {rel: self.files.file(rel) for rel in reads.get("files", ())}
        listings = dict(reads.get("listings", {}))
        declared = {glob: self.files.declared(glob) for glob in step.options.reads}
        unseen = "; ".join(reads.get("unseen") or ())
        conservative, keyed = {}, ""
        if unseen and declared:
            keyed = f"keyed on the files it declares with --reads ({', '.join(declared)}), as {unseen}"
        elif unseen:
            conservative = {"workspace": self.files.whole(), "unseen": unseen}
            keyed = (f"keyed on the whole workspace, as {unseen}; declare what it reads with "
                     f"%%step {name} --reads GLOB[,GLOB]")
        note = "; ".join(filter(None, (ran_because, keyed)))  # after why it ran, if it could have been cached
        key = entry_key(base, files, listings, declared, conservative.get("workspace"))
        self.keys[label] = (key, parts)
        entry = {
            "key": key, "base": base, "pipeline": self.pipeline, "step": label, "run_id": run_id,
            "locations": [run_id], "created": time.time(), "used": time.time(),
            "duration": outcome.duration, "no_cache": step.options.no_cache, "parts": parts,
            "files": files, "listings": listings, "declared": declared, **conservative,
            "outputs": {t.name: saved[t.name] for t in step.outputs}, "metrics": outcome.metrics,
        }
        try:
            self.index.put(entry)
        except OSError as exc:  # the run itself succeeded; only later reuse is lost
            return f"not cached: {exc}"
        return note

    # before a run --------------------------------------------------------------------------------
    def predict(self, plan: Plan, parameters: dict, steps=None) -> list[Decision]:
        """What a run would do now, step by step (``steps``: only these, in plan order), without running or
        linking anything."""
        records: dict[tuple[str, str], dict] = {}
        out = []
        for name, step in plan.steps.items():
            if steps is not None and name not in steps:
                continue
            waiting = [t.producer for t in step.inputs if (t.producer, t.name) not in records]
            if step.foreach:
                out.append(Decision(name, None, f"it loops over '{step.foreach.name}': each item is looked up "
                                                "when the run knows the items"))
                continue
            if waiting:
                out.append(Decision(name, None, f"upstream step '{waiting[0]}' runs first, so its outputs "
                                                "may change"))
                continue
            inputs = {t.name: records[(t.producer, t.name)] for t in step.inputs}
            parts = key_parts(plan, name, parameters, inputs)
            decision, entry, _ = self._decide(step, digest(parts), parts, read_content=False)
            if entry is not None:
                records.update({(name, output): record for output, record in entry["outputs"].items()})
            out.append(decision)
        self.files.done()
        return out

    def sources(self, plan: Plan, parameters: dict, selection) -> dict[str, str]:
        """Where a partial run's reused steps get their values: step -> the run whose result (same code,
        parameters, inputs and files) is reused; a :class:`KaleError` naming the first that has none.
        Those steps are reused from then on even where --no-cache would run them: they are not selected."""
        self.pinned = frozenset(selection.reuse)
        decisions = {d.step: d for d in self.predict(plan, parameters, selection.reuse)}
        for step in selection.reuse:
            decision = decisions[step]
            if decision.reuse_from is None:
                consumer, value = selection.needs(plan, step)
                why = decision.reason or "it never succeeded"
                raise KaleError(f"{selection.option}: step '{consumer}' needs '{value}' from step '{step}', which is "
                                f"not selected and has no earlier result to reuse ({why}); produce it first with "
                                f"%kale_run --to {step} (kale-magic run NOTEBOOK --to {step}).")
        return {step: decisions[step].reuse_from for step in selection.reuse}

    def done(self) -> None:
        """The run ended: keep what was learnt about the workspace (remembered hashes)."""
        self.files.done()

    # deciding -----------------------------------------------------------------------------------
    def _decide(self, step: StepPlan, base: str, parts: dict, read_content: bool = True,
                label: str | None = None) -> tuple[Decision, dict | None, str | None]:
        label = label or step.name
        before = self.resumed.get(label, {})
        forced = (None if step.name in self.pinned
                  else "forced by --no-cache" if not self.use_cache
                  else f"forced by %%step {step.name} --no-cache" if step.options.no_cache else None)
        if forced and not before:
            return Decision(step.name, None, forced), None, None
        entry = self._match(step, base)
        resumable = (entry is not None and before.get("key") == entry["key"]
                     and before.get("status") in ("succeeded", "cached"))
        if forced and not resumable:
            return Decision(step.name, None, forced), None, None
        if entry is None:
            return Decision(step.name, None, self._why_new(step, base, parts, label)), None, None
        problem = "no run holds its files any more"
        for location in entry.get("locations", ()):
            problem = _verify(self.index, location, entry.get("step", label), entry["outputs"], read_content)
            if problem is None:
                return Decision(step.name, entry["run_id"]), entry, location
        return Decision(step.name, None, f"cached outputs of run {entry['run_id']} are unusable ({problem}); "
                                         "running it again"), None, None

    def _match(self, step: StepPlan, base: str) -> dict | None:
        """The newest entry of this base that holds every value the step must save and whose files are
        what the step would read now."""
        return next((e for e in self.index.variants(base)
                     if not _missing(step, e) and self.files.matches(e)), None)

    def _why_new(self, step: StepPlan, base: str, parts: dict, name: str) -> str:
        before = self.resumed.get(name)
        if before and before.get("status") not in ("succeeded", "cached"):
            status = before.get("status")
            what = "it failed" if status == "failed" else f"it was {status}" if status else "it did not run"
            return f"resumed from run {self.resume}, where {what}"
        earlier = self.index.entry(before["key"]) if before and before.get("key") else None
        if earlier is not None:
            return f"changed since run {self.resume}: {self._difference(parts, earlier)}"
        same_code = self.index.variants(base)
        holding = [e for e in same_code if not _missing(step, e)]
        if same_code and not holding:
            missing = _missing(step, same_code[0])
            return f"it must now also save {', '.join(missing)}, which its cached result does not hold"
        same_code = holding
        if same_code:  # the earlier result that saw the fewest other files
            return self.files.changes(min(same_code, key=lambda e: len(self.files.differences(e))))
        latest = self.index.latest(self.pipeline, name)
        return self._difference(parts, latest) if latest else ""

    def _difference(self, parts: dict, entry: dict) -> str:
        """What differs from an earlier entry: its key parts, then the files it read."""
        reasons = [explain(parts, entry["parts"])] if parts != entry["parts"] else []
        files = self.files.changes(entry)
        return "; ".join(reasons + [files] if files else reasons) or "nothing changed"

    def _touch(self, entry: dict, run_id: str) -> None:
        locations = [run_id] + [r for r in entry.get("locations", ()) if r != run_id]
        self.index.put({**entry, "locations": locations[:KEPT_LOCATIONS], "used": time.time()})

    def _link_reports(self, location: str, name: str, run_dir: RunDir, was: str | None = None) -> dict:
        """The earlier executed notebook and log (of ``was``, default ``name``), linked into this run so it
        reads complete."""
        links = {}
        source = self.kale.run(location)
        for field, path in (("notebook", RunDir.executed), ("log", RunDir.log)):
            target = path(run_dir, name)
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                link_or_copy(path(source, was or name), target)
                links[field] = str(target)
            except OSError:
                continue
        return links


# files ------------------------------------------------------------------------------------------

def _label(step: str, item: int | None) -> str:
    """How a step's item is named in keys and the run's files: ``train[2]``."""
    return step if item is None else f"{step}[{item}]"


def _missing(step: StepPlan, entry: dict) -> list[str]:
    """The values ``step`` must save that ``entry`` does not hold (a run planned without a kernel keeps
    fewer final results, so its entries may hold fewer than a kernel's run needs)."""
    return sorted(t.name for t in step.outputs if t.name not in entry.get("outputs", {}))


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
