"""Where a KFP partial run's reused values come from: the artifacts an earlier KFP run left in the object store.

A partial run (``--only``, ``--from``, ``--to``) whose selected steps load values of unselected steps runs the
selected sub-pipeline with each such value imported (``dsl.importer``) from the artifact an earlier KFP run of
the same notebook saved under the pipeline root.  The local engine's rule picks that run: the newest one
recorded in this folder in which the producing step succeeded (or KFP served it from its cache) with the same
identity — its code, the ``%%imports`` and ``%%functions`` cells, its parameter values, its outputs' backends,
and its inputs' producers' identities, so its inputs match too.  The files a step read are not compared: a KFP
pod does not report them (KFP's own cache does not key on them either).  None found: the run is refused before
anything is uploaded, naming the step, the value and the command that produces it.

Only URIs under the pipeline root's scheme and bucket are imported: the KFP launcher downloads an input
artifact in the root's bucket with the root's credentials (``launcher_v2.go`` fetchNonDefaultBuckets), and any
other with the pod's environment, which a KFP pod does not have (the importer marks its artifacts
``fromEnv``: ``importer_launcher.go``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from urllib.parse import urlparse

from ...errors import KaleError
from ...layout import KaleDir, RunDir
from ...plan import Plan

REUSABLE = ("succeeded", "cached")  # a step whose values a KFP run left (its own, or its cache origin's)


@dataclass(frozen=True)
class Reused:
    """An unselected step's values for a partial run: the KFP run (kale-magic's run id) that saved them and
    each value's artifact URI."""

    step: str
    run_id: str
    values: dict[str, str]


def identities(plan: Plan, parameters: dict) -> dict[str, str]:
    """Each step's identity (see the module's docstring), in plan order."""
    from ...step.notebooks import literal

    found: dict[str, str] = {}
    for name, step in plan.steps.items():
        parts = [list(step.cells), list(plan.imports), list(plan.functions),
                 {p: literal(parameters.get(p, plan.parameters.get(p))) for p in sorted(step.parameters)},
                 sorted([t.name, t.producer, found[t.producer]] for t in step.inputs),
                 sorted([t.name, t.backend, t.artifact_type] for t in step.outputs),
                 [step.foreach.var, step.foreach.name] if step.foreach else None]
        found[name] = hashlib.sha256(json.dumps(parts, sort_keys=True, default=repr).encode()).hexdigest()[:24]
    return found


def record(plan: Plan, run_dir: RunDir, reused: dict[str, Reused] | None = None) -> None:
    """Keep this run's step identities (a later partial run matches them) and where its reused values are."""
    from ...files import atomic_write_json

    atomic_write_json(run_dir.step_identities, identities(plan, plan.parameters))
    if reused:
        atomic_write_json(run_dir.remote_values, {r.step: r.values for r in reused.values()})


def find(plan: Plan, selection, pipeline_root: str | None, kale: KaleDir, engine: str = "kfp") -> dict[str, Reused]:
    """step -> where its values come from, for every step ``selection`` reuses; a :class:`KaleError` (one
    sentence: step, value, the command that produces it) for the first that no earlier run can supply."""
    from ...history.store import RunStore
    from ...snapshot.remote import is_store

    if not selection.reuse:
        return {}
    consumer, value = selection.needs(plan, selection.reuse[0])
    if not (pipeline_root and is_store(pipeline_root)):
        raise KaleError(f"{selection.option}: step '{consumer}' needs '{value}' from step '{selection.reuse[0]}', "
                        "which is not selected; on Kubeflow Pipelines a partial run imports it from an earlier run's "
                        "artifacts, which needs Kfp.pipeline_root set to the object store they are in (s3:// or "
                        "minio://); set it, or select that step too.")
    wanted = identities(plan, plan.parameters)
    root = urlparse(pipeline_root)
    with RunStore.for_workspace(kale.root) as store:
        runs = [r for r in reversed(store.runs()) if r.engine == engine and r.pipeline == plan.pipeline]
    found: dict[str, Reused] = {}
    for step in selection.reuse:
        outputs = [t.name for t in plan.steps[step].outputs]
        why = f"no KFP run of {plan.pipeline} recorded in this folder ran it"
        for run in runs:
            status = next((s.status for s in run.steps if s.name == step), None)
            if status not in REUSABLE:
                continue
            run_dir = kale.run(run.run_id)
            saved = _read(run_dir.remote_values).get(step, {})
            if _read(run_dir.step_identities).get(step) != wanted[step]:
                if why.startswith("no KFP run"):
                    why = f"its code, parameters or inputs changed since run {run.run_id}, the latest that ran it"
                continue
            if not all(name in saved for name in outputs):
                why = (f"run {run.run_id} ran it, but its values are not in the object store (its pipeline root "
                       "was not one, or KFP served the step from a cache whose origin was not found)")
                continue
            if any(urlparse(saved[name])[:2] != root[:2] for name in outputs):
                why = f"run {run.run_id} saved it under another pipeline root than Kfp.pipeline_root"
                continue
            found[step] = Reused(step, run.run_id, {name: saved[name] for name in outputs})
            break
        if step not in found:
            consumer, value = selection.needs(plan, step)
            raise KaleError(f"{selection.option}: step '{consumer}' needs '{value}' from step '{step}', which is "
                            f"not selected and has no earlier KFP result to reuse ({why}); produce it first with "
                            f"%kale_run --engine kfp --to {step}.")
    return found


def _read(path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
