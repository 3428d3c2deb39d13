"""What a compiled step runs inside its KFP container (or under ``kfp.local``).

The generated component function only forwards its artifacts here, so the code
that runs on the cluster is this module and :mod:`kale_magic.step.runtime` — the same
runtime the local engine uses.
"""

from __future__ import annotations

import ast
import html
import json
import os
import re
import sys
import tempfile
from pathlib import Path

from ...layout import RunDir

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
ITEM_KEY = "kale_item"  # a --foreach step's outputs say their item in their metadata: dsl.Collected lists in order
# ... and in the object store, where the notebook cannot read that metadata (it is in ML Metadata): an empty file
# in each output's folder names the item and the number of items, so listing the task's folder orders its salts
ITEM_FILE = "kale-item-{item}-of-{count}"
ITEM_FILE_PATTERN = re.compile(r"kale-item-(\d+)-of-(\d+)")


def run_component(step, parameters, text_parameters, inputs, producers, outputs, report, metrics=None,
                  snapshot=None, notebook=None, notebook_file=None, notebook_sha256=None, python=None, runtime=None,
                  backends=None, item=None):
    """Run one step notebook against KFP artifacts; raise when the step fails so KFP marks it failed.

    The notebook is ``notebook`` (JSON text) or, for a step too large for its command line, the file the
    environment task unpacked (``notebook_file``, checked against ``notebook_sha256``). ``python`` and
    ``runtime`` are what compiled the pipeline: the step refuses another Python or another kale-magic.
    ``backends`` (output -> marshal backend) is the plan's choice, which the outputs' artifact types follow:
    ``save`` tries it first (pipelines compiled before it was passed choose as they did). ``item``: the
    index of a ``--foreach`` step's item (its ``dsl.ParallelFor`` iteration); an input that is a list of
    artifacts (``dsl.Collected``) loads as the list of the items' values, in item order.
    """
    from ...step import runtime as step_runtime

    _enter_environment(step, python, runtime)
    if notebook_file is not None:
        notebook = _carried_notebook(step, notebook_file, notebook_sha256)
    values = {k: decode(v) if k in text_parameters else v for k, v in parameters.items()}
    node = inject_parameters(json.loads(notebook), values)
    work = RunDir(tempfile.mkdtemp(prefix="kale-step-"))  # the same files a local run writes
    work.make_step_dirs()
    if snapshot is not None:  # the step's working directory: the notebook's folder as %kale_run found it
        from .snapshot import enter_snapshot

        enter_snapshot(snapshot, work.workspace)
        sys.path.insert(0, os.getcwd())  # its own modules import from there, as in the kernel
    context = step_runtime.StepContext(
        step=step,
        inputs={name: _paths(artifact, step, name) for name, artifact in inputs.items()},
        producers=producers,
        outputs={name: artifact.path for name, artifact in outputs.items()},
        metrics_path=str(work.metrics_file(step)),
        backends=dict(backends or {}),
        item=item,
    )
    outcome = step_runtime.run_step(node, work.executed(step), work.log(step), context)
    sys.stdout.write(work.log(step).read_text(encoding="utf-8"))  # into the pod's log
    Path(report.path).write_text(render_html(step, work.executed(step)), encoding="utf-8")
    if outcome.status != "succeeded":
        raise RuntimeError(f"step '{step}' failed: {outcome.error}")
    for name, artifact in outputs.items():
        artifact.metadata.update(outcome.saved.get(name, {}))
        if item is not None:
            artifact.metadata[ITEM_KEY] = item
            (Path(artifact.path) / ITEM_FILE.format(item=item, count=context.count)).touch()
    if metrics is not None:
        for name, value in sorted(outcome.metrics.items()):
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                metrics.log_metric(name, value)
        # every metric, as the kernel had it, in the artifact's file (KFP keeps logged ones in metadata only)
        Path(metrics.path).write_text(json.dumps(outcome.metrics, sort_keys=True, default=repr), encoding="utf-8")


def run_gate(step, condition, parameters, text_parameters, inputs, producers, python=None, runtime=None) -> str:
    """Evaluate ``step``'s ``--if`` on its parameters and the values it reads: "true", or why it is false
    (the output ``dsl.If`` compares; the reason shows in the task's output and log)."""
    from ...plan.condition import parse_condition

    _enter_environment(step, python, runtime)
    values = {k: decode(v) if k in text_parameters else v for k, v in parameters.items()}
    values.update({name: _load(artifact, step, name, producers.get(name)) for name, artifact in inputs.items()})
    checked = parse_condition(condition)
    if checked.holds(values):
        print(f"step '{step}' runs: condition {checked.text} holds")
        return "true"
    why = checked.why_false(values)
    print(f"step '{step}' is skipped: {why}")
    return why


def run_items(step, name, value=None, text=False, artifact=None, producer=None, python=None,
              runtime=None) -> list:
    """The item indices ``[0, 1, ...]`` of the value ``step``'s loop goes over (a parameter's ``value``, text
    when ``text``, or the ``artifact`` its producer saved), checked as in the kernel: a value --foreach cannot
    iterate fails this task with the sentence that says why, before any item starts."""
    from ...items import items

    _enter_environment(step, python, runtime)
    if artifact is not None:
        value = _load(artifact, step, name, producer)
    elif text:
        value = decode(value)
    count = len(items(value, step, name))
    print(f"step '{step}' runs {count} items of '{name}'")
    return list(range(count))


def _paths(artifact, step: str, name: str):
    """An input's path, or the paths of a ``dsl.Collected`` list of artifacts in item order: KFP does not
    promise the list's order, so each says its item (``ITEM_KEY``), and every item must be there once."""
    if not isinstance(artifact, list):
        return artifact.path
    indices = [artifact_.metadata.get(ITEM_KEY) for artifact_ in artifact]
    if None in indices or sorted(int(i) for i in indices) != list(range(len(artifact))):
        raise RuntimeError(f"step '{step}' received '{name}' from {len(artifact)} items whose item numbers are "
                           f"{indices}, not each of 0 to {len(artifact) - 1} once; compile and run the pipeline "
                           "again")
    return [a.path for _, a in sorted(zip((int(i) for i in indices), artifact), key=lambda pair: pair[0])]


def _load(artifact, step: str, name: str, producer: str | None):
    """An input's value: one artifact's, or the list of the items' values of a ``dsl.Collected`` one."""
    from ... import marshal

    where = _paths(artifact, step, name)
    if isinstance(where, list):
        return [marshal.load(w, name=name, step=producer) for w in where]
    return marshal.load(where, name=name, step=producer)


def _enter_environment(step: str, python: str | None, runtime: str | None) -> None:
    """The step runs only where the Python and the kale-magic are the ones that compiled it; the pod's ``HOME``
    (``/tmp/kale-home`` for a non-root pod, which no image has) is made, where IPython keeps its profile: without
    it every step warns that the folder is not writable and works in a throw-away one; and the archives of the
    step's own imports, which its bootstrap unpacks in the background, are waited for: the step's code, the
    processes it starts and its values' loading see them whole."""
    from .bootstrap import kernel_python

    here = kernel_python()
    if python and here != python:
        raise RuntimeError(f"step '{step}' was compiled for Python {python} but its image runs Python {here}: "
                           f"use an image with Python {python}")
    if runtime:
        from .wheel import runtime_version

        found = runtime_version()
        if found != runtime:
            raise RuntimeError(f"step '{step}' was compiled by kale-magic {runtime} but its image has kale-magic "
                               f"{found}: rebuild the image (kale-magic image), or let the steps install it "
                               "(Kfp.install_packages = True)")
    if os.environ.get("HOME"):
        try:
            os.makedirs(os.environ["HOME"], exist_ok=True)
        except OSError:  # IPython says so itself
            pass
    for finder in sys.meta_path:  # the environment's archives still unpacking (bootstrap.py): whole before any code
        if hasattr(finder, "settle"):
            finder.settle()


def _carried_notebook(step: str, path: str, sha256: str | None) -> str:
    import hashlib

    text = Path(path).read_text(encoding="utf-8")
    if sha256 and hashlib.sha256(text.encode()).hexdigest() != sha256:
        raise RuntimeError(f"step '{step}': the notebook its environment carries is not the one compiled for it; "
                           "compile and run the pipeline again")
    return text


def decode(text: str):
    """A list/dict/tuple/None parameter from its text: a Python literal, or JSON typed in the KFP UI."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return json.loads(text)


def inject_parameters(node, values: dict):
    """Add a cell that assigns the run's parameter values right after the ``parameters`` cell (as papermill)."""
    from ...step.notebooks import parameters_source

    if not values:
        return node
    cell = {"cell_type": "code", "id": "injected-parameters", "metadata": {"tags": ["injected-parameters"]},
            "source": parameters_source(values), "outputs": [], "execution_count": None}
    tagged = [i for i, c in enumerate(node["cells"]) if "parameters" in c.get("metadata", {}).get("tags", [])]
    node["cells"].insert(tagged[0] + 1 if tagged else 0, cell)
    return node


def render_html(step: str, executed: Path) -> str:
    """A self-contained HTML page of the executed step notebook: code, text, images, errors."""
    from ...ipynb import read_notebook

    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(step)}</title>"
             "<style>pre{background:#f6f8fa;padding:8px;white-space:pre-wrap}"
             ".err{background:#fdecea}</style></head><body>",
             f"<h1>Step {html.escape(step)}</h1>"]
    if executed.is_file():
        for cell in read_notebook(executed)["cells"]:
            if cell["cell_type"] == "code":
                parts.append(f"<pre>{html.escape(cell['source'])}</pre>")
                parts.extend(_render_output(out) for out in cell.get("outputs", []))
            else:
                parts.append(f"<div>{html.escape(cell['source'])}</div>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _render_output(out) -> str:
    if out["output_type"] == "stream":
        return f"<pre>{html.escape(out['text'])}</pre>"
    if out["output_type"] == "error":
        text = ANSI.sub("", "\n".join(out["traceback"])) or f"{out['ename']}: {out['evalue']}"
        return f"<pre class='err'>{html.escape(text)}</pre>"
    data = out.get("data", {})
    if "image/png" in data:
        return f"<img src='data:image/png;base64,{data['image/png']}'>"
    if "text/html" in data:
        return f"<div>{data['text/html']}</div>"  # the notebook's own HTML output, shown as in Jupyter
    return f"<pre>{html.escape(data.get('text/plain', ''))}</pre>"
