"""Which earlier run computed the outputs of a step that KFP served from its cache.

A cached step writes nothing under its own run: KFP's driver links the outputs of the newest earlier
execution with the same fingerprint in the pipeline's namespace (``backend/src/v2/driver/container.go``
reuseCachedOutputs; ``v2/cacheutils/cache.go`` GetExecutionCache sorts by ``created_at desc``). Those
outputs stay under that run's artifact URIs. The fingerprint (cacheutils GenerateCacheKey) hashes the
task's image, command and arguments, its input parameter values and its outputs' specs. The API returns
neither fingerprints nor artifact URIs (task details built from Argo nodes have no inputs or outputs:
``toModelTask`` in ``apiserver/server/api_converter.go``; the URIs live in ML Metadata, which the notebook
cannot reach), so the origin is found from what the API does return: the newest other run of the pipeline
whose spec gives the step the same component and executor and the same parameter values, and which left
the step's outputs in the object store (it ran the step rather than taking it from the cache too).
"""

from __future__ import annotations

import json

MAX_RUNS = 500  # runs looked at, newest first, before giving up (the step's values are then not listed)
PAGE_SIZE = 50


def find_origins(client, spec: dict, parameters: dict, run_id: str, tasks: list[str], has_outputs,
                 namespace: str | None = None) -> dict[str, str]:
    """``task -> run id`` for each of ``tasks`` whose origin is found; ``has_outputs(run_id, task)``
    says whether the object store holds that task's outputs under that run."""
    wanted = {task: identity(spec, parameters, task) for task in tasks}
    wanted = {task: key for task, key in wanted.items() if key is not None}
    specs: dict[str, dict | None] = {}
    found: dict[str, str] = {}
    token, looked = "", 0
    while wanted and looked < MAX_RUNS:
        page = client.list_runs(page_token=token, page_size=PAGE_SIZE, sort_by="created_at desc",
                                namespace=namespace)
        for other in page.runs or []:
            looked += 1
            ref = other.pipeline_version_reference
            if other.run_id == run_id or ref is None or not ref.pipeline_version_id:
                continue
            if ref.pipeline_version_id not in specs:
                version = client.get_pipeline_version(ref.pipeline_id, ref.pipeline_version_id)
                specs[ref.pipeline_version_id] = pipeline_spec(version.pipeline_spec)
            other_spec = specs[ref.pipeline_version_id]
            values = (other.runtime_config.parameters if other.runtime_config else None) or {}
            for task, key in list(wanted.items()):
                if other_spec and identity(other_spec, values, task) == key and has_outputs(other.run_id, task):
                    found[task] = other.run_id
                    del wanted[task]
        token = page.next_page_token
        if not token:
            break
    return found


def pipeline_spec(served) -> dict | None:
    """The pipeline spec of a version as the API serves it: the spec, or ``{pipeline_spec, platform_spec}``
    when the YAML had a platform document (``YamlStringToPipelineSpecStruct`` in ``apiserver/server/api_util.go``)."""
    if not isinstance(served, dict):
        return None
    return served["pipeline_spec"] if isinstance(served.get("pipeline_spec"), dict) else served


def identity(spec: dict, parameters: dict, task: str) -> str | None:
    """What KFP's fingerprint of ``task`` depends on, as text: its component, its executor, and the values
    of its input parameters; None when the spec has no such task. A task inside a sub-DAG (a loop or a
    condition) is compared on every pipeline parameter: stricter than KFP, never looser."""
    root = (spec.get("root") or {}).get("dag", {}).get("tasks", {})
    found = root.get(task)
    nested = found is None
    if nested:
        found = next((dag["dag"]["tasks"][task] for dag in (spec.get("components") or {}).values()
                      if task in ((dag.get("dag") or {}).get("tasks") or {})), None)
    if found is None:
        return None
    component = (spec.get("components") or {}).get((found.get("componentRef") or {}).get("name"), {})
    executor = ((spec.get("deploymentSpec") or {}).get("executors") or {}).get(component.get("executorLabel"))
    defaults = {name: p.get("defaultValue") for name, p in
                (((spec.get("root") or {}).get("inputDefinitions") or {}).get("parameters") or {}).items()}
    given = {**defaults, **parameters}
    if nested:
        values = given
    else:
        values = {name: given.get(p["componentInputParameter"]) if "componentInputParameter" in p else p
                  for name, p in ((found.get("inputs") or {}).get("parameters") or {}).items()}
    return json.dumps([component, executor, values, found.get("cachingOptions")], sort_keys=True, default=str)
