"""The deployment panel in a real JupyterLab and Notebook 7, in headless Chromium.

Starts the server on 127.0.0.1 in a temporary directory the default way (a token, no
``allow_hidden``: runs live in the hidden ``.kale/`` folder, which kale-magic's server
extension serves), opens a notebook that runs one pipeline that succeeds and one
whose step fails, runs all cells, waits for both panels' final state, checks the
rows, statuses and links a user sees, clicks every link and checks that what it
opens shows the expected content with no failed request, and saves screenshots to
``test-artifacts/``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from jupyter_app import serve  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = os.environ.get("KALE_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-dev-shm-usage"]

CELLS = [
    "%load_ext kale_magic",
    "%%parameters\nscale = 2",
    "%%step make\ndata = [1, 2, 3]",  # prints nothing: its log page says so
    "%%step score\ntotal = sum(data) * scale\nprint('scored', total)",
    "%%metrics\ntotal",
    "good = %kale_run --experiment browser",
    "open('input.txt', 'w').write('7')",
    "%%step read\nraw = open('input.txt').read()",
    "%%step shout\nloud = raw.upper()",
    "import os; os.remove('input.txt')  # the pipeline's 'read' step will not find it",
    "bad = %kale_run --experiment browser",
]


def _check_browser_tools(app: str) -> None:
    pytest.importorskip("jupyterlab", reason="the browser test needs jupyterlab: pip install 'kale-magic[browser]'")
    if app == "notebook":
        pytest.importorskip("notebook", reason="the Notebook 7 test needs notebook>=7: pip install 'kale-magic[browser]'")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"the browser test needs Debian's chromium at {CHROMIUM} (apt-get install -y chromium)")


@pytest.fixture
def lab(tmp_path):
    _check_browser_tools("lab")
    yield from serve(tmp_path, "lab")


@pytest.fixture
def notebook7(tmp_path):
    _check_browser_tools("notebook")
    yield from serve(tmp_path, "notebook")


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


@contextlib.contextmanager
def _notebook_page(browser, lab, cells, name, url_path="lab/tree"):
    """A page that opened the notebook and ran all its cells; on a failure, a screenshot and the server's log."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(lab["dir"] / name))
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(f"{lab['url']}/{url_path}/{name}?token={lab['token']}")
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
        _wait_for_idle_kernel(lab)
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
        page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
        yield page
    except BaseException:
        app = "notebook7" if url_path == "notebooks" else "jupyterlab"
        page.screenshot(path=str(ARTIFACTS / f"{app}-failure.png"), full_page=True)
        print(lab["log"].read_text(errors="replace")[-4000:])
        raise
    finally:
        page.close()


def _wait_for_idle_kernel(server, deadline: float = 180) -> None:
    """The notebook's kernel has started and is idle (asked from the server, the same for Lab and Notebook 7;
    a busy server may take a while to answer, so each request waits as long as the whole)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        with urllib.request.urlopen(f"{server['url']}/api/sessions?token={server['token']}",
                                    timeout=deadline) as answer:
            if any(s["kernel"]["execution_state"] == "idle" for s in json.load(answer)):
                return
        time.sleep(0.3)
    raise TimeoutError("the notebook's kernel did not start")


def _panel_rows(panel) -> list[tuple[str, str]]:
    return [(row.get_attribute("data-name"), row.get_attribute("data-status"))
            for row in panel.locator(".kale-row").all()]


# What the page a link opens must show, by row (the header is "run") and link label ("error": a graph node).
LINK_CONTENT = {
    # the header's snapshot: the files the steps worked in (a folder); the row's manifest: a page about them
    ("run", "snapshot"): "pipeline.ipynb", ("Snapshot", "manifest"): "installed distributions",
    ("Validate", "report"): "Pipeline '",
    ("Compile", "notebooks"): ".ipynb", ("make", "notebook"): "data = [1, 2, 3]",
    ("make", "log"): "(this step printed nothing)",
    ("score", "notebook"): "total = sum(data) * scale", ("score", "log"): "scored 12",
    ("read", "notebook"): "FileNotFoundError", ("read", "log"): "FileNotFoundError",
    ("read", "error"): "FileNotFoundError",
}
_TASK_LINKS = [("run", "snapshot"), ("Validate", "report"), ("Snapshot", "manifest"), ("Compile", "notebooks")]
GOOD_LINKS = [*_TASK_LINKS, ("make", "notebook"), ("make", "log"), ("score", "notebook"), ("score", "log")]
# The failed run: the failed node of the graph (above the rows), then the cached steps' earlier files.
BAD_LINKS = [*_TASK_LINKS, ("read", "error"), *GOOD_LINKS[4:], ("read", "notebook"), ("read", "log")]


_LINKS_JS = """links => links.map(a => {
    const node = a.classList.contains('kale-error-link') && a.querySelector('g.kale-node');
    const row = a.closest('.kale-row');
    const where = node ? [node.dataset.step, 'error'] : [row ? row.dataset.name : 'run', a.textContent];
    return [...where, a.getAttribute('href')];
})"""


def _panel_links(panel, expected: list[tuple[str, str]], deadline: float = 60) -> list[tuple[str, str, str]]:
    """(row, label, href) of every link of ``panel`` once they are the ``expected`` (row, label)s, read in
    one pass over the DOM; fails naming what the panel shows instead (its HTML goes to test-artifacts/)."""
    end = time.monotonic() + deadline
    while True:
        found = [tuple(link) for link in panel.locator("a.kale-link, a.kale-error-link").evaluate_all(_LINKS_JS)]
        if [where[:2] for where in found] == expected or time.monotonic() > end:
            break
        time.sleep(0.2)
    if [where[:2] for where in found] != expected:
        (ARTIFACTS / "panel-links-failure.html").write_text(panel.evaluate("e => e.outerHTML"))
    assert [where[:2] for where in found] == expected
    return found


def _follow_every_link(page, panel, expected: list[tuple[str, str]], screenshots: str | None = None) -> None:
    """Click each link of ``panel`` (the ``expected`` (row, label)s, in order; the header's row is "run", a
    failed graph node's label "error"); each opens a tab served by kale-magic's server extension showing
    the expected content, with no failed request."""
    failures = []

    def from_a_link(request) -> bool:
        """Made by a page a link opened, not by JupyterLab itself."""
        try:
            return request.frame.page != page
        except Exception:  # noqa: BLE001 - the navigation of a tab still being created
            return True

    def on_response(response):
        if response.status >= 400 and from_a_link(response.request):
            failures.append(f"{response.url} -> {response.status}")

    def on_failed(request):
        # JupyterLab opened from a notebook page polls the server: closing its tab aborts those requests
        if request.failure == "net::ERR_ABORTED" and "/kale-magic/" not in request.url:
            return
        if from_a_link(request):
            failures.append(f"{request.url} failed: {request.failure}")

    page.context.on("response", on_response)
    page.context.on("requestfailed", on_failed)
    links = panel.locator("a.kale-link, a.kale-error-link")
    for i, (*where, href) in enumerate(_panel_links(panel, expected)):
        where = tuple(where)
        link = links.nth(i)
        assert link.get_attribute("href") == href, (where, "the panel changed while its links were followed")
        assert "/kale-magic/files/.kale/" in href, where
        with page.context.expect_page(timeout=30_000) as opened:
            link.click()
        tab = opened.value
        tab.wait_for_load_state()
        text = tab.locator("body").inner_text(timeout=30_000)
        assert LINK_CONTENT[where] in text, (where, tab.url, text[:500])
        if where[1] == "notebook":  # drawn as JupyterLab draws it: code in colour, a link to the .ipynb file
            colours = tab.locator(".jp-InputArea .highlight span").evaluate_all(
                "spans => spans.map(s => getComputedStyle(s).color)")
            plain = tab.locator(".jp-InputArea .highlight pre").first.evaluate("e => getComputedStyle(e).color")
            assert any(c != plain for c in colours), (where, colours, plain)
            assert tab.locator("a", has_text="the notebook file (.ipynb)").count() == 1
        if screenshots and where in (("Compile", "notebooks"), ("make", "notebook")):
            tab.screenshot(path=str(ARTIFACTS / f"{screenshots}-link-{where[1]}.png"))
        if where == ("make", "notebook"):
            _open_in_jupyterlab(tab, "data = [1, 2, 3]")
        tab.close()
    page.context.remove_listener("response", on_response)
    page.context.remove_listener("requestfailed", on_failed)
    assert not failures, failures


def _open_in_jupyterlab(tab, code: str) -> None:
    """The rendered notebook's 'open in JupyterLab' link opens it in JupyterLab (a visible copy: the
    server's contents API refuses the hidden .kale/ folder), showing its cells."""
    tab.locator("a.kale-open-lab").click()
    tab.wait_for_url(re.compile(r"/lab/tree/kale-notebooks/runs/[^/]+/executed/make\.ipynb"), timeout=60_000)
    tab.locator(".jp-NotebookPanel .jp-Cell", has_text=code).first.wait_for(timeout=120_000)
    assert tab.locator(".jp-Dialog").count() == 0, "JupyterLab opened the file without an error"


def _graph_nodes(panel) -> dict[str, str]:
    """Step -> status of the nodes the panel's graph shows (each one visible)."""
    nodes = panel.locator("svg.kale-graph g.kale-node").all()
    assert all(node.is_visible() for node in nodes)
    return {node.get_attribute("data-step"): node.get_attribute("data-status") for node in nodes}


def test_panel_in_jupyterlab(lab, browser):
    with _notebook_page(browser, lab, CELLS, "pipeline.ipynb") as page:
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
        assert not good.locator(".kale-untrusted").first.is_visible(), "trusted: the picture, not its fallback"
        assert good.locator("svg.kale-timeline g.kale-bar").count() == 2
        assert _graph_nodes(bad) == {"make": "cached", "score": "cached", "read": "failed", "shout": "skipped"}
        failed_node = bad.locator("svg.kale-graph a.kale-error-link g.kale-node[data-step='read']")
        assert "rgb(198, 40, 40)" in failed_node.locator("rect").evaluate("e => getComputedStyle(e).stroke")

        _follow_every_link(page, good, GOOD_LINKS, "jupyterlab")
        _follow_every_link(page, bad, BAD_LINKS)


def test_an_untrusted_notebook_shows_a_readable_line_for_each_picture(lab, browser):
    """A notebook executed elsewhere (nbclient) is untrusted in JupyterLab: its saved panel goes through
    the HTML sanitizer, which strips the pictures; each shows one line instead of their words run together."""
    import nbclient

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS[:6]])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbclient.NotebookClient(nb, timeout=300, resources={"metadata": {"path": str(lab["dir"])}}).execute()
    nbformat.write(nb, str(lab["dir"] / "untrusted.ipynb"))
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(f"{lab['url']}/lab/tree/untrusted.ipynb?token={lab['token']}")
        panel = page.locator(".kale-panel")
        panel.wait_for(timeout=120_000)
        assert panel.get_attribute("data-status") is None, "sanitized: the data- attributes are gone"
        graph, timeline = panel.locator(".kale-graph-box"), panel.locator(".kale-timeline-box")
        assert graph.inner_text().strip() == ("The pipeline's graph (2 steps) shows once the notebook is trusted "
                                              "(rerun the cell, or Trust Notebook in JupyterLab's command palette)")
        assert timeline.inner_text().strip().startswith("The timeline of 2 steps shows once the notebook is trusted")
        assert "writes:" not in panel.inner_text(), "no tooltip of the graph shows as text"
        assert re.search(r"score\s+succeeded", panel.inner_text()), "the rows stay readable"
        page.screenshot(path=str(ARTIFACTS / "jupyterlab-untrusted-panel.png"))
    except BaseException:
        page.screenshot(path=str(ARTIFACTS / "jupyterlab-untrusted-failure.png"), full_page=True)
        raise
    finally:
        page.close()


def test_run_all_stops_at_a_failed_run(lab, browser):
    cells = ["%load_ext kale_magic", *CELLS[6:], "open('after.txt', 'w').write('the notebook went on')"]
    with _notebook_page(browser, lab, cells, "stops.ipynb") as page:
        page.wait_for_selector(".kale-panel[data-status='failed']", timeout=180_000)
        run_cell = page.locator(".jp-CodeCell").nth(len(cells) - 2)
        error = run_cell.locator("[data-mime-type='application/vnd.jupyter.stderr']")
        error.wait_for(timeout=60_000)
        assert re.match(r"Kale: run \S+ failed \(shown above\), so the notebook stops here", error.inner_text())
        panel = run_cell.locator(".kale-panel")
        assert panel.bounding_box()["y"] < error.bounding_box()["y"], "the panel shows first, then the error"
        assert panel.locator(".kale-row[data-name='read'] .kale-message").inner_text().startswith(
            "FileNotFoundError")
        _wait_for_idle_kernel(lab)
        last = page.locator(".jp-CodeCell").nth(len(cells) - 1)
        assert last.locator(".jp-InputPrompt").inner_text().strip() == "[ ]:", "the last cell never ran"
        assert not (lab["dir"] / "after.txt").exists()
        page.screenshot(path=str(ARTIFACTS / "jupyterlab-run-all-stops.png"))


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
    with _notebook_page(browser, lab, background_cells(lab["dir"] / "go"), "background.ipynb") as page:
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


def test_panel_links_in_notebook_7(notebook7, browser):
    with _notebook_page(browser, notebook7, CELLS[:6], "pipeline.ipynb", url_path="notebooks") as page:
        page.wait_for_selector(".kale-panel[data-status='succeeded']", timeout=180_000)
        panel = page.locator(".kale-panel")
        assert ("score", "succeeded") in _panel_rows(panel)
        page.screenshot(path=str(ARTIFACTS / "notebook7-panel.png"))
        _follow_every_link(page, panel, GOOD_LINKS, "notebook7")
