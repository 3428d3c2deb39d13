"""``%kale_debug``: put into the kernel exactly what a step received in a run, or what it produced.

What a step received is not the kernel's namespace now (later cells may have changed it) but
the run's own files: its parameter values (the parameters cell of its step notebook) and each
value it unmarshalled, read from the run's saved values — produced by the step that last
changed it, in place or not — through the engine's own load-back (an object-store download for
a KFP run).  Which step produced which value in that run is recorded when the run is planned
(:func:`record_flows`), so runs of earlier kernels can be debugged too.  Everything is checked
before anything is loaded: a run whose values were cleaned, or a step that did not run in it,
is refused in one sentence and the kernel is left as it was.

A ``--foreach`` step ran once per item, as instances ``step[i]`` with files of their own: one item
is debugged at a time (``--item I``, or the failed one with ``--failed``), with what that item
loaded — its own item of a same-clause producer's values, every item's as a list of another's —
and its VAR bound as the step bound it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import KaleError
from ..files import atomic_write_json, human_size
from ..layout import RunDir

if TYPE_CHECKING:
    from ..history.store import RunRecord, RunStore
    from ..plan import Plan

PARAMETERS = "%%parameters"
RAN = ("succeeded", "failed")  # statuses of a step that loaded its inputs in that run
PRODUCED = ("succeeded", "cached")  # statuses of a step whose outputs are in that run


def record_flows(plan: "Plan", run_dir: RunDir) -> None:
    """Write which values each step of the run loads (and from which step) and saves."""
    atomic_write_json(run_dir.flows, {name: _flow(plan, step) for name, step in plan.steps.items()})


def _flow(plan: "Plan", step) -> dict:
    flow = {"parameters": list(step.parameters), "inputs": {t.name: t.producer for t in step.inputs},
            "outputs": [t.name for t in step.outputs]}
    # values of --foreach producers: this instance's own item's ("item") or every item's, as a list ("all")
    looped = {t.name: "item" if step.itemwise(t.producer, plan) else "all"
              for t in step.inputs if plan.steps[t.producer].foreach}
    if looped:
        flow["items"] = looped
    if step.foreach:
        flow["foreach"] = [step.foreach.var, step.foreach.name]
    return flow


def saved_value(run_dir: RunDir, engine: str, step: str, name: str) -> Path | None:
    """Where value ``name`` of ``step`` is on this machine, loaded back by the run's engine if it keeps its
    values elsewhere (a KFP run's are in its object store)."""
    path = run_dir.value(step, name)
    if not path.exists():
        from .. import engines

        engines.get(engine).load_value(run_dir, step, name)
    return path if path.exists() else None


@dataclass(frozen=True)
class Loaded:
    name: str
    value: object = field(repr=False)
    type: str
    size: int | None
    producer: str  # the step that saved it, or %%parameters
    run_id: str


@dataclass
class Debugged:
    """What ``%kale_debug`` loaded, and for ``--failed`` the step's error and failing line."""

    step: str
    run_id: str
    outputs: bool
    loaded: list[Loaded]
    error: str = ""
    failing_line: str = ""

    def namespace(self) -> dict[str, object]:
        return {item.name: item.value for item in self.loaded}

    def report(self) -> str:
        what = "produced" if self.outputs else "received"
        lines = [f"kale: loaded what step '{self.step}' {what} in run {self.run_id}"
                 + ("" if self.loaded else ": nothing (it has no parameters or values to load)")]
        rows = [(i.name, i.type, "—" if i.size is None else human_size(i.size), i.producer, i.run_id)
                for i in self.loaded]
        if rows:
            header = ("name", "type", "size", "from", "run")
            widths = [max(len(str(r[c])) for r in [header, *rows]) for c in range(len(header))]
            lines += ["  " + "  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip()
                      for row in [header, *rows]]
        if self.error:
            lines.append(f"error: {self.error}")
        if self.failing_line:
            lines.append(self.failing_line)
        return "\n".join(lines)


def debug(store: "RunStore", kale, pipelines: set[str], step: str | None, run_id: str | None = None,
          outputs: bool = False, failed: bool = False, item: int | None = None) -> Debugged:
    """The values to load for ``%kale_debug`` (see the module's docstring); KaleError if it cannot."""
    record, step = _pick(store, kale, pipelines, step, run_id, outputs, failed)
    run_dir = kale.run(record.run_id)
    flows = _flows(run_dir, record, step)
    index = _item(run_dir, record, step, flows, item, outputs, failed)
    instance = step if index is None else f"{step}[{index}]"
    if outputs:
        wanted = [(name, instance) for name in flows["outputs"]]
        loaded = []
    else:
        wanted = [(name, _source(run_dir, producer, flows.get("items", {}).get(name), index))
                  for name, producer in sorted(flows["inputs"].items())]
        loaded = _parameters(run_dir, record, step, flows["parameters"])
    paths: dict[str, list[tuple[Path, str]]] = {}
    for name, source in wanted:  # all or nothing: check every value before loading one
        paths[name] = []
        for producer in source if isinstance(source, list) else [source]:
            path = saved_value(run_dir, record.engine, producer, name)
            if path is None:
                raise KaleError(_missing(record, instance, name, producer))
            paths[name].append((path, producer))
    loaded += [_load(paths[name], name, record.run_id, listed=isinstance(source, list)) for name, source in wanted]
    if index is not None and not outputs:
        loaded.append(_bound_item(flows["foreach"], loaded, step, index, record.run_id))
    result = Debugged(instance, record.run_id, outputs, loaded)
    if failed:
        outcome = run_dir.read_outcome(instance) if index is not None else None
        result.error = outcome.error if outcome and outcome.error else next(
            s.message for s in record.steps if s.name == step)
        result.failing_line = failing_line(run_dir, instance)
    return result


# which item of a --foreach step --------------------------------------------------------------

def _item(run_dir: RunDir, record: "RunRecord", step: str, flows: dict, item: int | None, outputs: bool,
          failed: bool) -> int | None:
    """The item of a ``--foreach`` step to debug (None: the step has no items)."""
    if "foreach" not in flows:
        if item is not None:
            raise KaleError(f"step '{step}' has no --foreach, so it has no items; leave out --item.")
        return None
    known = {i: run_dir.read_outcome(f"{step}[{i}]") for i in run_dir.items(step)}
    status = {i: outcome.status if outcome else "no record" for i, outcome in known.items()}
    listing = ", ".join(f"{i} {s}" for i, s in status.items()) or "none"
    if item is None and failed:
        item = next((i for i, s in status.items() if s == "failed"), None)
    if item is None:
        var, name = flows["foreach"]
        raise KaleError(f"step '{step}' ran once per item of '{name}' in run {record.run_id} (items: {listing}); "
                        f"name one: %kale_debug {step} --item I{' --outputs' if outputs else ''} loads that item's "
                        f"{'outputs' if outputs else f'inputs and {var}'}.")
    if item not in known:
        raise KaleError(f"step '{step}' has no item {item} in run {record.run_id} (items: {listing}); name one of "
                        "them with --item.")
    wanted = ("failed",) if failed else PRODUCED if outputs else RAN
    if status[item] not in wanted + ("no record",):
        did = "failed" if failed else "produced outputs" if outputs else "ran"
        raise KaleError(f"item {item} of step '{step}' never {did} in run {record.run_id} (it {status[item]}; "
                        f"items: {listing}); name another with --item.")
    return item


def _source(run_dir: RunDir, producer: str, looped: str | None, index: int | None) -> str | list[str]:
    """The instance(s) that saved an input: the producer, its item ``index``, or all its items (a list)."""
    if looped == "item" and index is not None:
        return f"{producer}[{index}]"
    if looped == "all":
        # the items that left files: an item a false --if skipped left none, and the step's lists leave it out
        return [f"{producer}[{i}]" for i in sorted(set(run_dir.items(producer)))]
    return producer


def _bound_item(loop: list[str], loaded: list["Loaded"], step: str, index: int, run_id: str) -> "Loaded":
    """``--foreach VAR in NAME``: VAR as the step bound it, item ``index`` of the NAME it loaded."""
    from ..items import items

    var, name = loop
    value = items(next(i.value for i in loaded if i.name == name), step, name)[index]
    return Loaded(var, value, type(value).__name__, None, f"item {index} of {name}", run_id)


# which run and step ------------------------------------------------------------------------

def _pick(store, kale, pipelines: set[str], step: str | None, run_id: str | None, outputs: bool,
          failed: bool) -> tuple["RunRecord", str]:
    if step is None and not failed:
        raise KaleError("%kale_debug needs a step: %kale_debug STEP [--run RUN_ID], or --failed for the last "
                        "step that failed.")
    wanted = ("failed",) if failed else PRODUCED if outputs else RAN
    if run_id is not None:
        record = store.get(run_id)
        steps = {s.name: s for s in record.steps}
        if step is None:
            step = next((s.name for s in record.steps if s.status == "failed"), None)
            if step is None:
                raise KaleError(f"no step failed in run {record.run_id}; name the step: %kale_debug STEP "
                                f"--run {record.run_id}.")
        if step not in steps:
            raise KaleError(f"run {record.run_id} has no step '{step}' (steps: {', '.join(steps) or 'none'}).")
        if not _did(kale, record, steps[step], wanted):
            raise KaleError(_not_run(record, steps[step], outputs, failed))
        return record, step
    for record in reversed(store.runs()):
        if record.pipeline not in pipelines:
            continue
        for s in record.steps:
            if (step is None or s.name == step) and _did(kale, record, s, wanted):
                return record, s.name
    pipeline = " or ".join(sorted(pipelines))
    if failed:
        which = f"step '{step}'" if step else "any step"
        raise KaleError(f"no run of {pipeline} in this folder has a failed {which}; %kale_runs lists the runs.")
    did = "produced outputs" if outputs else "ran"
    raise KaleError(f"step '{step}' never {did} in a run of {pipeline} in this folder; run the pipeline "
                    "(%kale_run) first, or name a run with --run RUN_ID.")


def _did(kale, record: "RunRecord", step, wanted: tuple[str, ...]) -> bool:
    """Whether ``step`` ended with a status in ``wanted`` in the run, or one of its items did (a --foreach
    step whose other items failed or were skipped)."""
    if step.status in wanted:
        return True
    if step.status not in ("failed", "skipped"):
        return False
    run_dir = kale.run(record.run_id)
    return any((outcome := run_dir.read_outcome(f"{step.name}[{i}]")) is not None and outcome.status in wanted
               for i in run_dir.items(step.name))


def _not_run(record: "RunRecord", step, outputs: bool, failed: bool) -> str:
    why = f": {step.message}" if step.message and step.status != "failed" else ""
    if failed:
        return (f"step '{step.name}' did not fail in run {record.run_id} (it {step.status}{why}); leave out "
                "--failed to load what it received.")
    if outputs:
        return (f"step '{step.name}' produced nothing in run {record.run_id} (it {step.status}{why}); leave out "
                "--run to pick the latest run in which it succeeded.")
    if step.status == "cached":
        return (f"step '{step.name}' did not run in run {record.run_id}: its result was reused from run "
                f"{step.cached_from}; debug that run (--run {step.cached_from}) or load its outputs with --outputs.")
    return (f"step '{step.name}' never ran in run {record.run_id} (it {step.status}{why}); leave out --run to pick "
            "the latest run that ran it.")


def _flows(run_dir: RunDir, record: "RunRecord", step: str) -> dict:
    import json

    try:
        return json.loads(run_dir.flows.read_text(encoding="utf-8"))[step]
    except (OSError, ValueError, KeyError):
        raise KaleError(f"run {record.run_id} has no record of what its steps loaded ({run_dir.flows} is missing: "
                        "the run was deleted or made by an older kale-magic); run the pipeline again to debug "
                        f"step '{step}'.") from None


def _missing(record: "RunRecord", step: str, name: str, producer: str) -> str:
    from .. import engines

    if not engines.get(record.engine).local:
        return (f"the value '{name}' that step '{producer}' saved in {record.engine} run {record.run_id} cannot be "
                "read back "
                "(KFP served that step from its cache, or Kfp.pipeline_root is not an object store the "
                f"kernel reaches); re-run with --no-cache to debug step '{step}'.")
    return (f"run {record.run_id}'s values were cleaned (%kale_cache --clear deleted '{name}' of step "
            f"'{producer}'); run the pipeline again (%kale_run) to debug step '{step}'.")


# loading ---------------------------------------------------------------------------------

def _parameters(run_dir: RunDir, record: "RunRecord", step: str, names: list[str]) -> list[Loaded]:
    """The parameter values the step ran with: its notebook's parameters cell, evaluated as the step did."""
    if not names:
        return []
    from ..ipynb import read_notebook

    cells = read_notebook(run_dir.notebook(step))["cells"]
    source = next(c["source"] for c in cells if c["metadata"].get("kale", {}).get("role") == "parameters")
    values: dict[str, object] = {}
    exec(compile(source, f"<parameters of step {step}>", "exec"), {}, values)
    return [Loaded(name, values[name], type(values[name]).__name__, None, PARAMETERS, record.run_id)
            for name in names]


def _load(found: list[tuple[Path, str]], name: str, run_id: str, listed: bool = False) -> Loaded:
    """One value, or (``listed``) the list of every item's value of a ``--foreach`` producer."""
    import json

    from .. import marshal
    from ..marshal.store import RECORD_FILE

    records = [json.loads((path / RECORD_FILE).read_text(encoding="utf-8")) for path, _ in found]
    values = [marshal.load(path, name=name, step=producer) for path, producer in found]
    if not listed:
        kind = records[0].get("type") or type(values[0]).__name__
        return Loaded(name, values[0], kind.removeprefix("builtins."), records[0].get("size"), found[0][1], run_id)
    sizes = [r.get("size") for r in records]
    step = found[0][1].partition("[")[0] if found else "?"
    return Loaded(name, values, "list", None if None in sizes else sum(sizes), f"{step} ({len(values)} items)",
                  run_id)


_FRAME = re.compile(r"Cell In\[(\d+)\], line (\d+)")


def failing_line(run_dir: RunDir, step: str) -> str:
    """The innermost traceback frame in the step's own cells, as 'cell N of step S, line L: code'."""
    from ..ipynb import read_notebook

    outcome = run_dir.read_outcome(step)
    executed = run_dir.executed(step)
    if outcome is not None and outcome.traceback and executed.exists():
        traceback, notebook = outcome.traceback, executed
        cells = [c for c in read_notebook(executed)["cells"] if c["cell_type"] == "code"]
        by_count = {c.get("execution_count"): c for c in cells}
    elif run_dir.log(step).is_file() and run_dir.notebook(step).is_file():
        # a KFP step: its pod's log (kept by the engine) and the step notebook compiled here, whose code
        # cells ran in order in a fresh shell, so execution count N is the N-th code cell
        traceback, notebook = run_dir.log(step).read_text(encoding="utf-8", errors="replace"), run_dir.notebook(step)
        cells = [c for c in read_notebook(notebook)["cells"] if c["cell_type"] == "code"]
        by_count = {number: c for number, c in enumerate(cells, 1)}
    else:
        return "the failing line is not on this machine (see the step's log)"
    traceback = re.sub(r"\x1b\[[0-9;]*m", "", traceback)
    own = [c for c in cells if c["metadata"].get("kale", {}).get("role") == "step"]
    found = ""
    for count, line in _FRAME.findall(traceback):
        cell = by_count.get(int(count))
        lines = cell["source"].splitlines() if cell is not None and cell in own else []
        code = lines[int(line) - 1].strip() if 0 < int(line) <= len(lines) else ""
        if code and code in traceback:  # the frame printed that very line: the mapping is right
            found = f"failing line: cell {own.index(cell) + 1} of step '{step}', line {line}: {code}"
    return found or "the error was raised outside the step's own cells (see its traceback in the log)"
