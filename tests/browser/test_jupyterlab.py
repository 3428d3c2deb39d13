"""The deployment panel in a real JupyterLab, in headless Chromium.

Starts JupyterLab on 127.0.0.1 in a temporary directory, opens a notebook that
runs one pipeline that succeeds and one whose step fails, runs all cells,
waits for both panels' final state, checks the rows, statuses and links a user
sees, follows a link, and saves a screenshot to ``test-artifacts/``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = os.environ.get("KALE_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-dev-shm-usage"]

CELLS = [
    "%load_ext kale_magic",
    "%%parameters\nscale = 2",
    "%%step make\ndata = [1, 2, 3]",
    "%%step score\ntotal = sum(data) * scale",
    "%%metrics\ntotal",
    "good = %kale_run --experiment browser",
    "open('input.txt', 'w').write('7')",
    "%%step read\nraw = open('input.txt').read()",
    "%%step shout\nloud = raw.upper()",
    "import os; os.remove('input.txt')  # the pipeline's 'read' step will not find it",
    "bad = %kale_run --experiment browser",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_server(url: str, process: subprocess.Popen, log: Path, deadline: float = 90) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if process.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"JupyterLab did not answer {url}")


def _serve(tmp_path, app: str):
    """Start ``jupyter lab`` or ``jupyter notebook`` on 127.0.0.1 in a fresh directory; yield its address."""
    pytest.importorskip("jupyterlab", reason="the browser test needs jupyterlab: pip install 'kale-magic[browser]'")
    if app == "notebook":
        pytest.importorskip("notebook", reason="the Notebook 7 test needs notebook>=7: pip install 'kale-magic[browser]'")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"the browser test needs Debian's chromium at {CHROMIUM} (apt-get install -y chromium)")
    workdir = tmp_path / "work"
    workdir.mkdir()
    home = tmp_path / "jupyter"
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "JUPYTER_CONFIG_DIR": str(home / "config"), "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"), "JUPYTER_RUNTIME_DIR": str(home / "runtime")}
    app_class = "LabApp" if app == "lab" else "JupyterNotebookApp"
    command = [sys.executable, "-m", "jupyter", app, "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
               f"--IdentityProvider.token={token}", "--ServerApp.open_browser=False", "--no-browser",
               f"--ServerApp.root_dir={workdir}", f"--{app_class}.news_url=None",
               "--ServerApp.allow_root=True",
               "--ServerApp.terminals_enabled=False",
               # Runs live in .kale/, a hidden directory Jupyter refuses to serve by default; the
               # README tells users to allow hidden files for the panel's links to open.
               "--ContentsManager.allow_hidden=True"]
    if app == "lab":
        command.append("--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate")
    notification = home / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notification.parent.mkdir(parents=True)
    notification.write_text('{"fetchNews": "false"}')
    log_path = tmp_path / f"jupyter-{app}.log"
    log = open(log_path, "wb")
    process = subprocess.Popen(command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_for_server(f"http://127.0.0.1:{port}/api/status?token={token}", process, log_path)
        yield {"url": f"http://127.0.0.1:{port}", "token": token, "dir": workdir, "log": log_path}
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.fixture
def lab(tmp_path):
    yield from _serve(tmp_path, "lab")


@pytest.fixture
def notebook7(tmp_path):
    yield from _serve(tmp_path, "notebook")


@pytest.fixture
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs playwright (pip only, "
                                   "no browser download: it drives Debian's chromium)")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            yield chromium
        finally:
            chromium.close()


def _open_notebook(browser, lab, cells, name, url_path="lab/tree"):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(lab["dir"] / name))
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{lab['url']}/{url_path}/{name}?token={lab['token']}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    _wait_for_idle_kernel(lab)
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
    return page


def _wait_for_idle_kernel(server, deadline: float = 60) -> None:
    """The notebook's kernel has started and is idle (asked from the server, the same for Lab and Notebook 7)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        with urllib.request.urlopen(f"{server['url']}/api/sessions?token={server['token']}", timeout=5) as answer:
            if any(s["kernel"]["execution_state"] == "idle" for s in json.load(answer)):
                return
        time.sleep(0.3)
    raise TimeoutError("the notebook's kernel did not start")


def _panel_rows(panel) -> list[tuple[str, str]]:
    return [(row.get_attribute("data-name"), row.get_attribute("data-status"))
            for row in panel.locator(".kale-row").all()]


def _graph_nodes(panel) -> dict[str, str]:
    """Step -> status of the nodes the panel's graph shows (each one visible)."""
    nodes = panel.locator("svg.kale-graph g.kale-node").all()
    assert all(node.is_visible() for node in nodes)
    return {node.get_attribute("data-step"): node.get_attribute("data-status") for node in nodes}


def test_panel_in_jupyterlab(lab, browser):
    page = _open_notebook(browser, lab, CELLS, "pipeline.ipynb")
    try:
        page.wait_for_function("() => document.querySelectorAll('.kale-panel[data-status=\"succeeded\"],"
                               " .kale-panel[data-status=\"failed\"]').length >= 2", timeout=180_000)
        panels = page.locator(".kale-panel")
        assert panels.count() == 2
        good, bad = panels.nth(0), panels.nth(1)
        good.scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / "jupyterlab-panel.png"))

        assert good.get_attribute("data-status") == "succeeded"
        assert _panel_rows(good) == [("Validate", "done"), ("Snapshot", "done"), ("Compile", "done"),
                                     ("Upload", "skipped"), ("Run", "done"), ("make", "succeeded"),
                                     ("score", "succeeded")]
        assert good.locator(".kale-row[data-name='score'] .kale-status").inner_text() == "succeeded"
        assert "total=12" in good.locator(".kale-footer").inner_text()

        assert bad.get_attribute("data-status") == "failed"
        assert _panel_rows(bad)[-2:] == [("read", "failed"), ("shout", "skipped")]
        failed = bad.locator(".kale-row[data-name='read']")
        assert "FileNotFoundError" in failed.inner_text()
        assert "rgb(253, 236, 234)" in failed.evaluate("e => getComputedStyle(e).backgroundColor")
        traceback = bad.locator("details.kale-traceback")
        traceback.locator("summary").click()
        assert "FileNotFoundError" in traceback.locator("pre").inner_text()
        bad.screenshot(path=str(ARTIFACTS / "jupyterlab-failed-panel.png"))

        # The graph above the step rows and the timeline under the footer, frozen with the final state.
        assert _graph_nodes(good) == {"make": "succeeded", "score": "succeeded"}
        assert good.locator("svg.kale-timeline g.kale-bar").count() == 2
        assert _graph_nodes(bad) == {"make": "cached", "score": "cached", "read": "failed", "shout": "skipped"}
        failed_node = bad.locator("svg.kale-graph a.kale-error-link g.kale-node[data-step='read']")
        assert "rgb(198, 40, 40)" in failed_node.locator("rect").evaluate("e => getComputedStyle(e).stroke")

        # Links: JupyterLab rewrote the notebook-relative hrefs to the server's files/ URLs.
        log_link = good.locator(".kale-row[data-name='score'] a.kale-link", has_text="log")
        href = log_link.get_attribute("href")
        assert "/files/.kale/runs/" in href and href.split("?")[0].endswith("/logs/score.log")
        response = page.request.get(href if href.startswith("http") else lab["url"] + href,
                                    headers={"Authorization": f"token {lab['token']}"})
        assert response.status == 200, f"{href} -> {response.status}"
        report = good.locator(".kale-row[data-name='Validate'] a.kale-link", has_text="report")
        report.click()
        page.wait_for_selector(".lm-TabBar-tab .lm-TabBar-tabLabel:text-is('validation.txt')", timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "jupyterlab-report-link.png"))
        page.locator(".lm-TabBar-tab .lm-TabBar-tabLabel:text-is('pipeline.ipynb')").click()
        failed_node.click()  # opens the step's executed notebook, where its error is
        page.wait_for_selector(".lm-TabBar-tab .lm-TabBar-tabLabel:text-is('read.ipynb')", timeout=30_000)
    except BaseException:
        page.screenshot(path=str(ARTIFACTS / "jupyterlab-failure.png"), full_page=True)
        print(lab["log"].read_text(errors="replace")[-4000:])
        raise
    finally:
        page.close()


def background_cells(go: Path) -> list[str]:
    """A run whose 'hold' step waits for the file ``go`` (a full path: steps run in a snapshot)."""
    return [
        "%load_ext kale_magic",
        "%%imports\nimport os, time",
        f"%%parameters\ngo_file = {str(go)!r}",
        "open(go_file, 'w').close()",
        "%%step make\ndata = [1, 2, 3]",
        "%%step hold\nwhile not os.path.exists(go_file):\n    time.sleep(0.05)\nn = len(data)",
        "os.remove(go_file)  # in the pipeline, 'hold' waits until the test creates it",
        "run = %kale_run --background",
        "still_working = 6 * 7\nstill_working",
    ]


def test_background_run_updates_the_live_widget(lab, browser):
    page = _open_notebook(browser, lab, background_cells(lab["dir"] / "go"), "background.ipynb")
    try:
        page.wait_for_selector(".kale-panel-widget .kale-row[data-name='hold'][data-status='running'],"
                               " .kale-panel[data-status]", timeout=120_000)
        assert page.locator(".kale-panel").count() == 0, "the run ended before the test let it"
        page.locator(".jp-OutputArea-output", has_text=re.compile(r"^\s*42\s*$")).wait_for(timeout=60_000)
        widget = page.locator(".kale-panel-widget")
        assert widget.locator(".kale-row[data-name='make'][data-status='succeeded']").count() == 1
        # The live graph: 'make' done, 'hold' running, its border marching (SMIL, no script).
        assert _graph_nodes(widget) == {"make": "succeeded", "hold": "running"}
        hold = widget.locator("svg.kale-graph g.kale-node[data-step='hold'] rect")
        offsets = {hold.evaluate("e => getComputedStyle(e).strokeDashoffset")}
        for _ in range(10):
            page.wait_for_timeout(150)
            offsets.add(hold.evaluate("e => getComputedStyle(e).strokeDashoffset"))
        assert len(offsets) > 1, "a running node is visibly animated"
        widget.screenshot(path=str(ARTIFACTS / "jupyterlab-live-widget.png"))
        (lab["dir"] / "go").touch()
        page.wait_for_selector(".kale-panel-widget svg.kale-graph g.kale-node[data-step='hold']"
                               "[data-status='succeeded'], .kale-panel[data-status='succeeded']", timeout=120_000)
        page.wait_for_selector(".kale-panel[data-status='succeeded']", timeout=120_000)
        assert page.locator(".kale-panel-widget").count() == 0, "the widget gave way to the static panel"
        final = page.locator(".kale-panel")
        assert _panel_rows(final)[-2:] == [("make", "succeeded"), ("hold", "succeeded")]
        assert _graph_nodes(final) == {"make": "succeeded", "hold": "succeeded"}
        assert final.locator("svg.kale-timeline g.kale-bar").count() == 2
        final.screenshot(path=str(ARTIFACTS / "jupyterlab-final-graph.png"))
    except BaseException:
        page.screenshot(path=str(ARTIFACTS / "jupyterlab-failure.png"), full_page=True)
        print(lab["log"].read_text(errors="replace")[-4000:])
        raise
    finally:
        page.close()


def test_panel_links_in_notebook_7(notebook7, browser):
    page = _open_notebook(browser, notebook7, CELLS[:6], "pipeline.ipynb", url_path="notebooks")
    try:
        page.wait_for_selector(".kale-panel[data-status='succeeded']", timeout=180_000)
        panel = page.locator(".kale-panel")
        assert ("score", "succeeded") in _panel_rows(panel)
        page.screenshot(path=str(ARTIFACTS / "notebook7-panel.png"))
        href = panel.locator(".kale-row[data-name='score'] a.kale-link", has_text="log").get_attribute("href")
        assert "/files/.kale/runs/" in href and href.split("?")[0].endswith("/logs/score.log")
        response = page.request.get(href if href.startswith("http") else notebook7["url"] + href,
                                    headers={"Authorization": f"token {notebook7['token']}"})
        assert response.status == 200, f"{href} -> {response.status}"
        with page.context.expect_page(timeout=30_000) as opened:
            panel.locator(".kale-row[data-name='Validate'] a.kale-link", has_text="report").click()
        opened.value.wait_for_load_state()
        assert "validation.txt" in opened.value.url
    except BaseException:
        page.screenshot(path=str(ARTIFACTS / "notebook7-failure.png"), full_page=True)
        print(notebook7["log"].read_text(errors="replace")[-4000:])
        raise
    finally:
        page.close()
