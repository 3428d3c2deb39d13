"""The panel in a real ipykernel: live widget rows, the saved final state, background updates."""

import os
import textwrap
from pathlib import Path

import nbformat
import pytest

pytest.importorskip("ipywidgets")
from jupyter_client.manager import start_new_kernel  # noqa: E402
from nbclient import NotebookClient  # noqa: E402

pytestmark = pytest.mark.slow  # Jupyter kernels

ROOT = Path(__file__).resolve().parents[1]
WIDGET = "application/vnd.jupyter.widget-view+json"

# An engine stand-in: changes a RunState from a worker thread like the engines do.
FAKE_RUN = textwrap.dedent("""
    import threading
    from kale_magic import panel
    from kale_magic.run.state import RunState

    def drive(state, fail):
        state.task("Validate", "done", "2 steps", report="validation.html")
        state.task("Run", "running")
        for name in list(state.steps):
            state.step(name, "running", log=f".kale/runs/r1/{name}.log")
            if fail and name == "b":
                state.step(name, "failed", message="ValueError: <bad>", traceback="Traceback ...")
                state.task("Run", "failed", "step b failed")
                return state.finish("failed", "step b failed")
            state.step(name, "succeeded", notebook=f".kale/runs/r1/{name}.ipynb")
        state.task("Run", "done")
        state.finish("succeeded")

    def start(mode="auto", fail=False):
        state = RunState("r1", "demo", "exp", "local", steps=["a", "b", "c"])
        view = panel.show(state, mode=mode)
        worker = threading.Thread(target=drive, args=(state, fail))
        return state, view, worker
""")


@pytest.fixture
def ipykernel_client(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    manager, client = start_new_kernel(kernel_name="python3", cwd=str(tmp_path), env=env)
    try:
        yield client
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def execute(client, code):
    """Run code; return every iopub message until the kernel is idle again.

    Messages from a run's worker thread may carry an earlier cell's parent header,
    so they are collected whatever cell they name.
    """
    msg_id = client.execute(code)
    messages = []
    while True:
        message = client.get_iopub_msg(timeout=60)
        messages.append(message)
        if (message["msg_type"] == "status" and message["content"]["execution_state"] == "idle"
                and message["parent_header"].get("msg_id") == msg_id):
            break
    reply = client.get_shell_msg(timeout=60)
    assert reply["content"]["status"] == "ok", reply["content"]
    return messages


def test_widget_rows_update_live_and_the_final_state_replaces_them(ipykernel_client):
    execute(ipykernel_client, FAKE_RUN)
    messages = execute(ipykernel_client, "state, view, worker = start(); worker.start(); state.wait(30)")
    shown = [m for m in messages if m["msg_type"] == "display_data"]
    assert len(shown) == 1 and WIDGET in shown[0]["content"]["data"]
    assert "text/html" in shown[0]["content"]["data"], "a fallback for frontends without widgets"
    row_updates = [str(m["content"]["data"]) for m in messages if m["msg_type"] == "comm_msg"]
    assert any('data-name="Validate" data-status="done"' in u for u in row_updates), \
        "rows are redrawn while the run goes on"
    final = [m for m in messages if m["msg_type"] == "update_display_data"]
    assert len(final) == 1
    data = final[0]["content"]["data"]
    assert WIDGET not in data, "the saved output must not depend on widget state"
    assert 'data-status="succeeded"' in data["text/html"] and "Run r1 succeeded" in data["text/plain"]
    assert final[0]["content"]["transient"]["display_id"] == shown[0]["content"]["transient"]["display_id"]
    closed = [m for m in messages if m["msg_type"] == "comm_close"]
    assert closed, "the row widgets are closed once the static panel replaces them"


def test_background_run_keeps_updating_after_the_cell_returned(ipykernel_client):
    execute(ipykernel_client, FAKE_RUN)
    first = execute(ipykernel_client, "import time\nstate, view, worker = start(fail=True)")
    assert [m for m in first if m["msg_type"] == "display_data"]
    later = execute(ipykernel_client, "worker.start()\nx = 1 + 1")  # the user goes on working
    later += execute(ipykernel_client, "state.wait(30); assert state.status == 'failed'")
    final = [m for m in later if m["msg_type"] == "update_display_data"]
    assert len(final) == 1
    html = final[0]["content"]["data"]["text/html"]
    assert 'data-name="b" data-status="failed"' in html and "ValueError: &lt;bad&gt;" in html


def test_html_mode_updates_one_display_in_place(ipykernel_client):
    execute(ipykernel_client, FAKE_RUN)
    messages = execute(ipykernel_client,
                       "state, view, worker = start(mode='html'); worker.start(); state.wait(30)")
    shown = [m for m in messages if m["msg_type"] == "display_data"]
    updates = [m for m in messages if m["msg_type"] == "update_display_data"]
    assert len(shown) == 1 and WIDGET not in shown[0]["content"]["data"]
    assert updates and 'data-status="succeeded"' in updates[-1]["content"]["data"]["text/html"]


def test_executed_notebook_keeps_the_final_panel(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell(FAKE_RUN),
        nbformat.v4.new_code_cell("state, view, worker = start(fail=True); worker.start(); state.wait(30)"),
    ])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    client = NotebookClient(nb, timeout=60, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    saved_env = dict(os.environ)
    os.environ.update(env)
    try:
        client.execute()
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
    outputs = nb.cells[1].outputs
    panels = [o for o in outputs if o.output_type == "display_data"]
    assert len(panels) == 1
    assert set(panels[0].data) == {"text/plain", "text/html"}
    assert 'class="kale-panel" data-status="failed"' in panels[0].data["text/html"]
    assert "✗ b failed" in panels[0].data["text/plain"]


def test_kale_run_in_the_background_keeps_its_panel_live(ipykernel_client):
    execute(ipykernel_client, "%load_ext kale_magic")
    for cell in ("%%step make\ndata = [1, 2, 3]", "%%step total\nn = sum(data)"):
        execute(ipykernel_client, cell)
    started = execute(ipykernel_client, "run = %kale_run --background")
    shown = [m for m in started if m["msg_type"] == "display_data"]
    assert len(shown) == 1 and WIDGET in shown[0]["content"]["data"]
    later = execute(ipykernel_client, "run.wait(60); assert run.status == 'succeeded', run")
    final = [m for m in started + later if m["msg_type"] == "update_display_data"]
    assert len(final) == 1, "the final panel is drawn once, from the run's thread"
    html = final[0]["content"]["data"]["text/html"]
    assert 'data-name="total" data-status="succeeded"' in html and 'class="kale-footer"' in html


def test_saved_notebook_holds_the_pipeline_picture(tmp_path):
    """%kale_show and a real %kale_run through nbclient: the saved outputs and their nbconvert HTML hold the SVG."""
    import xml.etree.ElementTree as ET

    from nbconvert import HTMLExporter

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in (
        "%load_ext kale_magic",
        "%%step load\nrows = list(range(10))",
        "%%step low --after load\nlow = rows[:5]",
        "%%step high --after load\nhigh = rows[5:]",
        "%%step join --after low,high\ntotal = sum(low) + sum(high)",
        "%kale_show",
        "run = %kale_run --no-snapshot",
    )])
    client = NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    saved_env = dict(os.environ)
    os.environ["PYTHONPATH"] = str(ROOT)
    try:
        client.execute()
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
    nbformat.write(nb, str(tmp_path / "saved.ipynb"))
    saved = nbformat.read(str(tmp_path / "saved.ipynb"), as_version=4)

    def pictures(cell, css_class):
        found = []
        for output in cell.outputs:
            markup = output.get("data", {}).get("text/html", "")
            start = markup.find(f'<svg xmlns="http://www.w3.org/2000/svg" class="{css_class}"')
            if start >= 0:
                found.append(ET.fromstring(markup[start:markup.index("</svg>", start) + 6]))
        return found

    def statuses(svg, css_class):
        return {g.get("data-step"): g.get("data-status") for g in svg.iter("{http://www.w3.org/2000/svg}g")
                if g.get("class") == css_class}

    show, run = saved.cells[5], saved.cells[6]
    [planned] = pictures(show, "kale-graph")
    assert statuses(planned, "kale-node") == dict.fromkeys(["load", "low", "high", "join"], "planned")
    assert "load -> low: rows" in show.outputs[0]["data"]["text/plain"]
    panels = [o for o in run.outputs if o.output_type == "display_data"]
    assert len(panels) == 1 and "application/vnd.jupyter.widget-view+json" not in panels[0].data
    [graph], [timeline] = pictures(run, "kale-graph"), pictures(run, "kale-timeline")
    assert statuses(graph, "kale-node") == dict.fromkeys(["load", "low", "high", "join"], "succeeded")
    assert statuses(timeline, "kale-bar") == dict.fromkeys(["load", "low", "high", "join"], "succeeded")
    exported, _ = HTMLExporter().from_notebook_node(saved)
    assert exported.count('class="kale-graph"') == 2 and exported.count('class="kale-timeline"') == 1
