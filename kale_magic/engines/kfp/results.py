"""A Kubeflow run's results in the notebook: its metrics, and where each value its steps saved lives.

KFP writes a run's artifacts under ``<pipeline root>/<pipeline>/<run id>/<task>/[<salt>/]<output>``
(the salt since KFP 2.5: a new UUID per execution, ``provisionOutputs`` in ``backend/src/v2/driver/driver.go``).
The items of a ``--foreach`` step all run as the same task, so they share its folder, apart only by their
salts; each item's step leaves an empty ``kale-item-I-of-N`` file in every value folder it uploads
(:data:`.component.ITEM_FILE`), so one listing of the folder says which salt holds which item, and
``run.load`` of such a value gives the list of the items' values in item order. With an object-store
pipeline root (``Kfp.pipeline_root``), the notebook reads them with the credentials the snapshot upload
uses: each step's metrics file once the run ends, and a value when ``run.load`` asks for it (downloaded
into the run's folder, then checked against its checksums like any saved value). A step that KFP served from its cache wrote nothing under this run:
its results are read under the run that computed them (its ``origin``, found by :mod:`.origins`).
"""

from __future__ import annotations

import json

from ...files import atomic_write_json
from ...layout import RunDir
from ...plan import Plan
from .compiler import METRICS, Names
from .component import ITEM_FILE_PATTERN

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
    looped: dict[str, dict] = {}
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
        if step.foreach:  # each item's values under a salt of its own: step[i] -> name -> URL
            found, looped[name] = items_saved(name, task, mine, {io[("out", t.name)]: t.name for t in step.outputs})
            values.update(found)
            continue
        for transfer in step.outputs:
            record = f"/{io[('out', transfer.name)]}/{MARSHAL_RECORD}"
            found = [key[:-len(MARSHAL_RECORD) - 1] for key in mine if key.endswith(record)]
            if found:
                values.setdefault(name, {})[transfer.name] = found[-1]
    atomic_write_json(run_dir.remote_values, values)
    atomic_write_json(run_dir.remote_items, looped)
    return metrics


def items_saved(step: str, task: str, keys: list[str], outputs: dict[str, str]) -> tuple[dict, dict]:
    """Where each item of ``--foreach`` step ``step`` saved its values (``{"step[i]": {name: URL}}``), from the
    ``keys`` under its task folder ``task``; and ``{"count": N}``, or ``{"error": why}`` (one sentence) when
    the items there are not each of 0 to N-1 once for every value. ``outputs``: artifact name -> value name."""
    folders: dict[str, str] = {}  # a value folder (<task><salt>/<artifact>) -> the value's name
    numbers: dict[str, tuple[int, int]] = {}  # a value folder -> (its item, the number of items)
    for key in keys:
        salt, _, rest = key[len(task):].partition("/")
        artifact, _, file = rest.partition("/")
        if artifact not in outputs:
            continue
        folder = f"{task}{salt}/{artifact}"
        if file == MARSHAL_RECORD:
            folders[folder] = outputs[artifact]
        elif marker := ITEM_FILE_PATTERN.fullmatch(file):
            numbers[folder] = (int(marker.group(1)), int(marker.group(2)))
    unnumbered = sorted({name for folder, name in folders.items() if folder not in numbers})
    if unnumbered:
        return {}, {"error": f"the items of step '{step}' saved {', '.join(map(repr, unnumbered))} without their "
                             "item numbers (a pipeline compiled by an older kale-magic): compile and run the "
                             "pipeline again to load them"}
    saved: dict[str, dict[int, list[str]]] = {name: {} for name in outputs.values()}
    for folder, name in folders.items():
        saved[name].setdefault(numbers[folder][0], []).append(folder)
    counts = {numbers[folder][1] for folder in folders}
    count = max(counts, default=0)
    for name, by_item in sorted(saved.items()):
        if len(counts) > 1 or sorted(by_item) != list(range(count)) or any(len(f) > 1 for f in by_item.values()):
            listed = ", ".join(f"{i} ({len(f)} times)" if len(f) > 1 else str(i) for i, f in sorted(by_item.items()))
            return {}, {"error": f"the object store holds '{name}' of step '{step}' for items {listed or 'none'}, "
                                 f"not each of 0 to {count - 1} once (an item failed, or KFP's cache served some "
                                 "items from another run): run the pipeline again with --no-cache to load the list"}
    found: dict[str, dict[str, str]] = {}
    for name, by_item in saved.items():
        for index, (folder,) in sorted(by_item.items()):
            found.setdefault(f"{step}[{index}]", {})[name] = folder
    return found, {"count": count}


def run_prefix(pipeline_root: str, pipeline: str, kfp_run_id: str) -> str:
    return f"{pipeline_root.rstrip('/')}/{pipeline}/{kfp_run_id}/"


def has_outputs(pipeline_root: str, pipeline: str, kfp_run_id: str, task: str) -> bool:
    """Whether ``task`` of run ``kfp_run_id`` left anything in the object store (it ran, not cached)."""
    from ...snapshot.remote import list_keys

    return bool(list_keys(f"{run_prefix(pipeline_root, pipeline, kfp_run_id)}{task}/"))


def saved_items(run_dir: RunDir, step: str) -> list[str] | None:
    """The instances (``step[i]``, in item order) whose values ``run.load`` lists for ``--foreach`` step
    ``step`` of a KFP run; None when the run's results were not read (no object-store pipeline root); a
    :class:`KaleError` saying why when the items the store holds do not add up."""
    from ...errors import KaleError

    try:
        looped = json.loads(run_dir.remote_items.read_text(encoding="utf-8"))[step]
    except (OSError, ValueError, KeyError):
        return None
    if "error" in looped:
        raise KaleError(looped["error"] + ".")
    return [f"{step}[{i}]" for i in range(looped["count"])]


def fetch(run_dir: RunDir, step: str, name: str) -> bool:
    """Download the value ``name`` of ``step`` into the run's folder, if the KFP run left it; True if it did."""
    from ...snapshot.remote import download_prefix

    try:
        url = json.loads(run_dir.remote_values.read_text(encoding="utf-8"))[step][name]
    except (OSError, ValueError, KeyError):
        return False
    download_prefix(url, run_dir.value(step, name))
    return True
