"""The Jupyter server extension that serves run files: a real ``jupyter server`` started the
default way (token auth, hidden files not allowed), with the extension as ``pip install``
enabled it; requests sent with ``http.client`` exactly as written (no path clean-up)."""

from __future__ import annotations

import http.client
import json
import os
import re
from urllib.parse import urlsplit

import nbformat
import pytest

from jupyter_app import serve
from kale_magic.server.address import FileServer

pytest.importorskip("jupyter_server", reason="the file server test needs jupyter_server (the [browser] extra)")
from kale_magic.server.handlers import RENDER_THREADS  # noqa: E402  (needs jupyter_server)
from kale_magic.server.pages import RENDER_MAX  # noqa: E402

pytestmark = pytest.mark.slow  # a Jupyter server per test


@pytest.fixture
def server(tmp_path):
    yield from serve(tmp_path, "server")


def request(server, path: str, method: str = "GET", token: bool = True, headers=None):
    """(status, headers, body) for ``path`` sent verbatim."""
    address = urlsplit(server["url"])
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=60)
    sent = dict(headers or {})
    if token:
        sent["Authorization"] = f"token {server['token']}"
    connection.request(method, path, headers=sent)
    response = connection.getresponse()
    body = response.read().decode(errors="replace")
    connection.close()
    return response.status, dict(response.getheaders()), body


@pytest.fixture
def run_files(server):
    work = server["dir"]
    run = work / ".kale" / "runs" / "r1"
    (run / "logs").mkdir(parents=True)
    (run / "logs" / "train.log").write_text("epoch 1: loss 0.5\n")
    (run / "validation.txt").write_text("Pipeline 'demo' (1 steps)\n")
    (run / "executed").mkdir()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "total = 6 * 7", outputs=[nbformat.v4.new_output("stream", name="stdout", text="forty-two\n")])])
    nbformat.write(nb, str(run / "executed" / "train.ipynb"))
    (work / "secret.txt").write_text("not a run file")
    (work / "sub" / ".kale").mkdir(parents=True)
    (work / "sub" / ".kale" / "note.txt").write_text("a notebook in a subfolder")
    os.symlink("../../../secret.txt", run / "escape.txt")
    return run


def test_run_files_are_served_to_the_servers_users(server, run_files):
    status, headers, body = request(server, "/kale-magic/files/.kale/runs/r1/logs/train.log")
    assert status == 200 and body == "epoch 1: loss 0.5\n" and headers["Content-Type"].startswith("text/plain")
    assert "sandbox" in headers["Content-Security-Policy"]
    status, _, body = request(server, "/kale-magic/files/.kale/runs/r1/executed/train.ipynb")
    assert status == 200 and "total" in body and "forty-two" in body and "<script" not in body
    assert json.loads(request(server, "/kale-magic/files/.kale/runs/r1/executed/train.ipynb?raw=1")[2])["cells"]
    status, headers, body = request(server, "/kale-magic/files/.kale/runs/r1")  # a folder: an index page
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert 'href="/kale-magic/files/.kale/runs/r1/logs"' in body and "validation.txt" in body
    assert request(server, "/kale-magic/files/sub/.kale/note.txt")[0] == 200
    assert request(server, "/kale-magic/files/.kale/runs/r1/validation.txt", method="HEAD")[0] == 200


def test_requests_without_credentials_or_outside_run_folders_are_refused(server, run_files):
    status, headers, body = request(server, "/kale-magic/files/.kale/runs/r1/logs/train.log", token=False)
    assert status in (302, 403) and "loss" not in body
    if status == 302:
        assert "/login" in headers["Location"]
    for path in ("/kale-magic/files/.kale/../secret.txt", "/kale-magic/files/.kale/runs/r1/../../../secret.txt",
                 "/kale-magic/files/.kale/%2e%2e/secret.txt", "/kale-magic/files/secret.txt",
                 "/kale-magic/files/.kale/runs/r1/escape.txt", "/kale-magic/files//etc/passwd",
                 "/kale-magic/files/.kale/runs/r1/nothing.txt"):
        status, _, body = request(server, path)
        assert status in (403, 404), path
        assert "not a run file" not in body and "root:" not in body
    status, _, _ = request(server, "/kale-magic/files/.kale/runs/r1/logs/train.log", method="PUT",
                           headers={"Content-Length": "0"})
    assert status in (403, 405)  # read-only
    assert (run_files / "logs" / "train.log").read_text() == "epoch 1: loss 0.5\n"


def test_only_folders_and_regular_files_are_served_so_a_fifo_blocks_nothing(server, run_files):
    """A FIFO named like a notebook or log would block the thread that opens it until a writer comes:
    more requests for it than the server has threads must each be refused, and notebooks still render."""
    os.mkfifo(run_files / "executed" / "stuck.ipynb")
    os.mkfifo(run_files / "logs" / "stuck.log")
    for _ in range(2 * RENDER_THREADS + 6):
        for path in ("executed/stuck.ipynb", "executed/stuck.ipynb?raw=1", "logs/stuck.log"):
            status, _, _ = request(server, f"/kale-magic/files/.kale/runs/r1/{path}")
            assert status == 404, path
    status, _, body = request(server, "/kale-magic/files/.kale/runs/r1/executed/train.ipynb")
    assert status == 200 and "forty-two" in body
    assert "stuck" not in request(server, "/kale-magic/files/.kale/runs/r1/executed")[2]


def test_a_notebook_too_large_to_render_is_offered_raw(server, run_files):
    big = run_files / "executed" / "big.ipynb"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("plot()", outputs=[nbformat.v4.new_output(
        "display_data", data={"image/png": "A" * (RENDER_MAX + 1), "text/plain": "<Figure>"})])])
    nbformat.write(nb, str(big))
    status, _, body = request(server, "/kale-magic/files/.kale/runs/r1/executed/big.ipynb")
    assert status == 200 and "too large to render here" in body and "AAAA" not in body
    assert 'href="big.ipynb?raw=1"' in body
    status, headers, _ = request(server, "/kale-magic/files/.kale/runs/r1/executed/big.ipynb?raw=1", method="HEAD")
    assert status == 200 and int(headers["Content-Length"]) == big.stat().st_size


def test_hostile_names_answer_404_and_the_index_hides_what_leaves_the_root(server, run_files):
    folder = os.fsencode(run_files / "odd")
    os.mkdir(folder)
    with open(folder + b"/caf\xe9.txt", "wb") as f:  # Latin-1: not UTF-8
        f.write(b"x")
    (run_files / "odd" / "plain.txt").write_text("fine")
    os.symlink("loop-b", run_files / "odd" / "loop-a")
    os.symlink("loop-a", run_files / "odd" / "loop-b")
    os.symlink("/etc", run_files / "odd" / "outside-dir")
    os.symlink("../../../../secret.txt", run_files / "odd" / "outside-file")
    os.symlink("../logs", run_files / "odd" / "inside")
    status, _, body = request(server, "/kale-magic/files/.kale/runs/r1/odd")
    assert status == 200 and "plain.txt" in body and ">inside/<" in body
    for hidden in ("outside", "loop", "caf"):
        assert hidden not in body
    base = "/kale-magic/files/.kale/runs/r1/odd/"
    for name in ("loop-a", "loop-a/x", "caf%E9.txt", "plain.txt%00", "%00", "x" * 300, ("y" * 200 + "/") * 3,
                 "outside-dir", "outside-dir/passwd", "outside-file"):
        status, _, body = request(server, base + name)
        assert status == 404, name
        assert "Traceback" not in body and "fine" not in body
    assert "Traceback" not in server["log"].read_text()
    assert request(server, base + "inside/train.log")[2] == "epoch 1: loss 0.5\n"


def test_only_kernels_the_server_started_link_to_it(tmp_path):
    """The extension exports its address to the server's environment; a kernel links there only if
    that server is its parent (not nbconvert or a terminal below it) and it is not VS Code's."""
    exported = FileServer("/base/kale-magic/files/", tmp_path).environment(pid=4242)
    linked = FileServer.for_kernel({**exported, "JPY_PARENT_PID": "4242"}, {})
    log = tmp_path / ".kale" / "runs" / "r1" / "logs" / "a b.log"
    assert linked.href(log) == "/base/kale-magic/files/.kale/runs/r1/logs/a%20b.log"
    assert linked.href(tmp_path / "data.csv") is None and linked.href("/etc/passwd") is None
    assert FileServer.for_kernel({**exported, "JPY_PARENT_PID": "1"}, {}) is None
    assert FileServer.for_kernel({**exported, "JPY_PARENT_PID": "4242"}, {"__vsc_ipynb_file__": "x.ipynb"}) is None
    assert FileServer.for_kernel({"JPY_PARENT_PID": "4242"}, {}) is None


PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")


def test_run_files_render_as_pages_worth_reading(server, run_files):
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("def f(x):\n    return 1 / x\nf(0)", outputs=[
            nbformat.v4.new_output("display_data", data={"image/png": PNG, "text/plain": "<Figure>"}),
            nbformat.v4.new_output("error", ename="ZeroDivisionError", evalue="division by zero",
                                   traceback=["\x1b[0;31mZeroDivisionError\x1b[0m: division by zero"])])])
    nbformat.write(nb, str(run_files / "executed" / "boom.ipynb"))
    status, headers, body = request(server, "/kale-magic/files/.kale/runs/r1/executed/boom.ipynb")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert '<span class="k">def</span>' in body  # syntax colouring (lab template's pygments classes)
    assert 'class="ansi-red-fg"' in body and ".jp-RenderedText pre .ansi-red-fg" in body  # traceback colours
    assert f'src="data:image/png;base64,{PNG}' in body
    assert 'href="boom.ipynb?raw=1"' in body and "<script" not in body

    (run_files / "logs" / "quiet.log").write_text("")
    status, headers, body = request(server, "/kale-magic/files/.kale/runs/r1/logs/quiet.log")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "(this step printed nothing)" in body

    status, headers, body = request(server, "/kale-magic/files/.kale/runs/r1/validation.txt")
    assert headers["Content-Type"].startswith("text/html") and "<pre>Pipeline &#x27;demo&#x27; (1 steps)\n</pre>" in body

    manifests = server["dir"] / ".kale" / "snapshots" / "manifests"
    manifests.mkdir(parents=True)
    (manifests / "s1.json").write_text(json.dumps({
        "id": "s1", "root": "/work", "created": "2026-12-06T10:00:00+00:00", "format": 2, "dirs": [],
        "symlinks": [], "skipped": [], "environment": {"python": "3.11.9", "packages": {"numpy": "2.4.6"}},
        "files": [{"path": "data/train.csv", "size": 2048, "mode": 420, "xxh3_128": "ab" * 16}]}))
    status, headers, body = request(server, "/kale-magic/files/.kale/snapshots/manifests/s1.json")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "<td>data/train.csv</td><td class=\"num\">2.0 KiB</td>" in body and "1 files, 2.0 KiB" in body
    assert "<td>python</td><td>3.11.9</td>" in body and "numpy 2.4.6" in body
    assert json.loads(request(server, "/kale-magic/files/.kale/snapshots/manifests/s1.json?raw=1")[2])["id"] == "s1"


def test_a_run_notebook_opens_in_jupyterlab_through_a_visible_copy_made_once(server, run_files):
    """The rendered notebook links to the opener, which copies the notebook out of the hidden folder
    (that the server's contents API refuses) and sends the browser to the copy in JupyterLab; a
    second click keeps what the user changed in the copy; the copies stay out of git and snapshots."""
    from kale_magic.snapshot.workspace import scan

    page = request(server, "/kale-magic/files/.kale/runs/r1/executed/train.ipynb")[2]
    assert re.search(r'href="/kale-magic/open/\.kale/runs/r1/executed/train\.ipynb\?_xsrf=[^"]+">open in JupyterLab</a>',
                     page)
    hidden = request(server, "/api/contents/.kale/runs/r1/executed/train.ipynb")[0]
    assert hidden == 404, "the server is started the default way: its contents API hides .kale/"

    status, headers, _ = request(server, "/kale-magic/open/.kale/runs/r1/executed/train.ipynb")
    assert status == 302 and headers["Location"] == "/lab/tree/kale-notebooks/runs/r1/executed/train.ipynb"
    copy = server["dir"] / "kale-notebooks" / "runs" / "r1" / "executed" / "train.ipynb"
    assert copy.read_bytes() == (run_files / "executed" / "train.ipynb").read_bytes()
    status, _, body = request(server, "/api/contents/kale-notebooks/runs/r1/executed/train.ipynb")
    assert status == 200 and json.loads(body)["content"]["cells"][0]["source"] == "total = 6 * 7"

    copy.write_text(copy.read_text().replace("6 * 7", "6 * 8"))  # the user's edit in JupyterLab
    assert request(server, "/kale-magic/open/.kale/runs/r1/executed/train.ipynb")[0] == 302
    assert "6 * 8" in copy.read_text() and "6 * 7" in (run_files / "executed" / "train.ipynb").read_text()
    assert [f for f, _ in scan(server["dir"]).files if f.startswith("kale-notebooks/")] == []

    for path in ("/kale-magic/open/.kale/runs/r1/logs/train.log", "/kale-magic/open/.kale/runs/r1/executed",
                 "/kale-magic/open/.kale/runs/r1/missing.ipynb", "/kale-magic/open/secret.txt"):
        assert request(server, path)[0] == 404, path
    assert request(server, "/kale-magic/open/.kale/runs/r1/executed/train.ipynb", token=False)[0] in (302, 403)
    status, _, _ = request(server, "/kale-magic/open/.kale/runs/r1/executed/train.ipynb", token=False,
                           headers={"Referer": "http://evil.example/"})
    assert status in (302, 403)


def test_renderings_wait_for_a_thread_of_their_own_at_most_the_timeout(tmp_path):
    """The extension's rendering threads are bounded: with every one of them busy, a request is
    answered 503 when its timeout passes, and the server's default executor was never used."""
    import asyncio
    import threading

    from tornado import web

    from kale_magic.server.handlers import Renderer
    from kale_magic.server.pages import notebook_page

    renderer, release = Renderer(threads=1, timeout=0.2), threading.Event()
    busy = renderer.executor.submit(release.wait)
    nbformat.write(nbformat.v4.new_notebook(), str(tmp_path / "a.ipynb"))
    try:
        with pytest.raises(web.HTTPError) as refused:
            asyncio.run(renderer.render("a.ipynb", lambda: notebook_page(tmp_path / "a.ipynb")))
        assert refused.value.status_code == 503
    finally:
        release.set()
    busy.result()
    renderer.timeout = 120  # the first rendering imports nbconvert
    assert "<b>a.ipynb</b>" in asyncio.run(renderer.render("a.ipynb", lambda: notebook_page(tmp_path / "a.ipynb")))
