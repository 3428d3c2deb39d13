"""A Kubeflow run's results in the notebook: its metrics, and where each value its steps saved lives.

KFP writes a run's artifacts under ``<pipeline root>/<pipeline>/<run id>/<task>/[<salt>/]<output>``
(the salt since KFP 2.5). With an object-store pipeline root (``Kfp.pipeline_root``), the notebook
reads them with the credentials the snapshot upload uses: each step's metrics file once the run ends,
and a value when ``run.load`` asks for it (downloaded into the run's folder, then checked against its
checksums like any saved value). A step that KFP served from its cache wrote nothing under this run:
its results are read under the run that computed them (its ``origin``, found by :mod:`.origins`).
"""

from __future__ import annotations

import json

from ...files import atomic_write_json
from ...layout import RunDir
from ...plan import Plan
from .compiler import METRICS, Names

MARSHAL_RECORD = "kale.json"  # the file every saved value's folder holds (kale_magic.marshal)


def collect(plan: Plan, pipeline_root: str, kfp_run_id: str, run_dir: RunDir,
            origins: dict[str, str] | None = None, reused: dict[str, dict[str, str]] | None = None) -> dict[str, object]:
    """The run's metrics; records where its values are in ``run_dir.remote_values``. ``origins``: the run
    whose outputs a cached step reused, by step; ``reused``: step -> value -> URL, of the steps a partial run
    imported from an earlier run."""
    from ...snapshot.remote import download, list_keys

    names = Names(plan)
    listed: dict[str, list[str]] = {}
    metrics: dict[str, object] = {}
    values: dict[str, dict[str, str]] = dict(reused or {})
    for name, step in plan.steps.items():
        run = (origins or {}).get(name, kfp_run_id)
        if run not in listed:
            listed[run] = list_keys(run_prefix(pipeline_root, names.pipeline, run))
        task = f"{run_prefix(pipeline_root, names.pipeline, run)}{names.tasks[name]}/"
        mine = [key for key in listed[run] if key.startswith(task)]
        for key in mine:
            if key.endswith(f"/{METRICS}"):  # written by the step: every metric, as the kernel had it
                run_dir.metrics_file(name).parent.mkdir(parents=True, exist_ok=True)
                local = download(key, run_dir.metrics_file(name))
                metrics.update(json.loads(local.read_text(encoding="utf-8")))
        io = Names.io(step)
        # a --foreach step's items write under one task folder, apart only by KFP's salt, which does not say the
        # item: listing one would make run.load return one item's value for the list, so none is listed
        for transfer in step.outputs if not step.foreach else ():
            record = f"/{io[('out', transfer.name)]}/{MARSHAL_RECORD}"
            found = [key[:-len(MARSHAL_RECORD) - 1] for key in mine if key.endswith(record)]
            if found:
                values.setdefault(name, {})[transfer.name] = found[-1]
    atomic_write_json(run_dir.remote_values, values)
    return metrics


def run_prefix(pipeline_root: str, pipeline: str, kfp_run_id: str) -> str:
    return f"{pipeline_root.rstrip('/')}/{pipeline}/{kfp_run_id}/"


def has_outputs(pipeline_root: str, pipeline: str, kfp_run_id: str, task: str) -> bool:
    """Whether ``task`` of run ``kfp_run_id`` left anything in the object store (it ran, not cached)."""
    from ...snapshot.remote import list_keys

    return bool(list_keys(f"{run_prefix(pipeline_root, pipeline, kfp_run_id)}{task}/"))


def fetch(run_dir: RunDir, step: str, name: str) -> bool:
    """Download the value ``name`` of ``step`` into the run's folder, if the KFP run left it; True if it did."""
    from ...snapshot.remote import download_prefix

    try:
        url = json.loads(run_dir.remote_values.read_text(encoding="utf-8"))[step][name]
    except (OSError, ValueError, KeyError):
        return False
    download_prefix(url, run_dir.value(step, name))
    return True
