"""``Kale.on_run_end``: called with the finished Run on both engines, after the panel's last update; a
raising hook is one line and changes nothing; the README's example posts to a real HTTP server."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from traitlets import TraitError

from kale_magic.errors import RunFailed

README = Path(__file__).resolve().parents[1] / "README.md"
CELLS = ["%%parameters\nn = 3", "%%step load\ndata = list(range(n))",
         "%%step total\ntotal = sum(data)", "%%metrics\ntotal"]


class Seen:
    """A hook that records what it saw of the run, and what the panel and the run store showed then.

    ``%config`` deep-copies what it sets: the hook is a function (copied as itself) calling this object."""

    def __init__(self, kernel, capsys=None):
        self.kernel, self.capsys, self.calls = kernel, capsys, []
        self.called = threading.Event()

        def hook(run):
            self.saw(run)
        self.hook = hook

    def saw(self, run):
        from kale_magic.history.store import RunStore

        with RunStore.for_workspace(Path.cwd()) as store:
            record = store.get(run.id)
        printed = self.capsys.readouterr().out if self.capsys else ""
        self.calls.append(dict(run=run, status=run.status, finished=run.state.finished, stored=record.status,
                               printed=printed, thread=threading.current_thread().name))
        self.called.set()


def test_the_hook_gets_the_finished_run_after_the_panel_and_the_store(kernel, capsys):
    kernel.cells(*CELLS)
    seen = Seen(kernel, capsys)
    kernel.ns["seen"] = seen.hook
    kernel.run("%config Kale.panel = 'text'")
    kernel.run("%config Kale.on_run_end = seen")
    run = kernel.run("%kale_run")
    (call,) = seen.calls
    assert call["run"] is run and call["status"] == "succeeded" and call["finished"]
    assert call["stored"] == "succeeded"
    assert call["printed"].rstrip().splitlines()[-1].startswith(f"Run {run.id} succeeded"), call["printed"]
    assert call["thread"] == threading.main_thread().name
    assert run.metrics == {"total": 3}


def test_a_failed_run_calls_the_hook_then_stops_the_notebook(kernel):
    kernel.run("%%step a\nx = 1")
    kernel.error("%%step b\ny = 1 / (x - 1)")  # fails in the kernel too: recorded all the same
    seen = Seen(kernel)
    kernel.ns["seen"] = seen.hook
    kernel.run("%config Kale.on_run_end = seen")
    error = kernel.error("%kale_run")
    assert isinstance(error, RunFailed)
    (call,) = seen.calls
    assert call["status"] == "failed" and call["stored"] == "failed" and call["run"] is error.run


def test_a_raising_hook_is_one_line_and_the_run_keeps_its_status(kernel, capsys):
    kernel.cells(*CELLS)
    kernel.run("def broken(run):\n    raise ConnectionError('chat is down\\nsecond line')")
    kernel.run("%config Kale.on_run_end = broken")
    run = kernel.run("%kale_run")
    assert run.status == "succeeded" and kernel.magics.last_run is run
    lines = [line for line in capsys.readouterr().err.splitlines() if "on_run_end" in line]
    assert lines == [f"kale: Kale.on_run_end hook broken raised ConnectionError: chat is down "
                     f"(run {run.id} stays succeeded)"]
    from kale_magic.history.store import RunStore

    with RunStore.for_workspace(Path.cwd()) as store:
        assert store.get(run.id).status == "succeeded"


def test_a_background_run_calls_the_hook_once_when_it_ends(kernel):
    kernel.cells("%%step a\nimport time\ntime.sleep(0.3)\nx = 1", "%%step b\ny = x + 1")
    seen = Seen(kernel)
    kernel.ns["seen"] = seen.hook
    kernel.run("%config Kale.on_run_end = seen")
    run = kernel.run("%kale_run --background")
    assert seen.called.wait(60)
    run.wait()
    (call,) = seen.calls
    assert call["status"] == "succeeded" and call["stored"] == "succeeded"
    assert call["thread"] == f"kale-run-{run.id}"


def test_a_kfp_run_calls_the_hook(kernel, monkeypatch, tmp_path):
    from kfp_api_server import FakeKfpServer

    for var in ("KF_PIPELINES_ENDPOINT", "KF_PIPELINES_UI_ENDPOINT", "KF_PIPELINES_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(tmp_path / "no-token"))
    kernel.cells(*CELLS[:3])
    seen = Seen(kernel)
    kernel.ns["seen"] = seen.hook
    kernel.run("%config Kale.on_run_end = seen")
    kernel.run("%config Kfp.install_packages = False")  # nothing to publish: the upload needs no object store
    with FakeKfpServer() as server:
        server.script_run(dict(state="SUCCEEDED", tasks={"load": "SUCCEEDED", "total": "SUCCEEDED"}))
        run = kernel.run(f"%kale_run --host {server.url} --no-snapshot")
    (call,) = seen.calls
    assert call["run"] is run and run.state.engine == "kfp"
    assert call["status"] == "succeeded" and call["stored"] == "succeeded"


def test_an_entry_point_names_the_hook(kernel, tmp_path, monkeypatch):
    """A real distribution on sys.path declares the entry point; the user sets its name."""
    site = tmp_path / "site"
    (site / "team_hooks").mkdir(parents=True)
    (site / "team_hooks" / "__init__.py").write_text("CALLS = []\n\ndef post(run):\n    CALLS.append(run.status)\n")
    info = site / "team_hooks-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: team-hooks\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[kale_magic.hooks]\nteam-chat = team_hooks:post\n")
    monkeypatch.syspath_prepend(str(site))
    kernel.cells(*CELLS[:2])
    kernel.run("%config Kale.on_run_end = 'team-chat'")
    kernel.run("%kale_run")
    import team_hooks

    assert team_hooks.CALLS == ["succeeded"]


def test_an_unknown_hook_name_is_refused_when_set(kernel):
    with pytest.raises(TraitError, match=r"'team-chat'.*entry point in group kale_magic.hooks"):
        kernel.magics.on_run_end = "team-chat"
    with pytest.raises(TraitError, match="give a callable"):
        kernel.magics.on_run_end = 3
    assert kernel.magics.on_run_end is None


class _Webhook(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.posts.append((self.headers["Content-Type"], json.loads(body)))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


def readme_hook_example() -> str:
    section = README.read_text().split("### When a run ends", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
    return code


def test_the_readme_example_posts_the_run_to_a_webhook(kernel, monkeypatch):
    code = readme_hook_example()
    assert len(code.strip().splitlines()) <= 10
    server = HTTPServer(("127.0.0.1", 0), _Webhook)
    server.posts = []
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    try:
        monkeypatch.setenv("TEAM_WEBHOOK_URL", f"http://127.0.0.1:{server.server_port}/hook")
        monkeypatch.setenv("no_proxy", "127.0.0.1")
        kernel.cells(*CELLS)
        kernel.run(code)
        run = kernel.run("%kale_run --pipeline nightly")
    finally:
        server.shutdown()
        server.server_close()
    assert server.posts == [("application/json", {"text": f"nightly run {run.id}: succeeded {{'total': 3}}"})]
