"""The panel's views over RunState: transitions, failure, cache, escaping, text fallback."""

import io
import re
from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest
from IPython.core.interactiveshell import InteractiveShell

from kale_magic import panel
from kale_magic.panel.render import Links, render_html, render_text
from kale_magic.panel.views import TextView, Throttle
from kale_magic.run.state import RunState

HOSTILE = '<script>alert("x")</script>\'"><img src=x onerror=alert(1)>'


class Page(HTMLParser):
    """Elements and attributes of an HTML fragment, as a browser would parse them."""

    def __init__(self, text):
        super().__init__()
        self.tags, self.attrs, self.text = [], [], []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs.append(dict(attrs))

    def handle_data(self, data):
        self.text.append(data)

    def rows(self):
        return [(a["data-name"], a["data-status"]) for a in self.attrs if "data-status" in a and "data-name" in a]


def run_to_success(state):
    state.task("Validate", "running")
    state.task("Validate", "done", "3 steps, 2 edges", report="validation.html")
    state.task("Snapshot", "done", "12 files", manifest=".kale/runs/r1/snapshot.json")
    state.task("Compile", "done", "pipeline.yaml", YAML=".kale/runs/r1/pipeline.yaml")
    state.task("Upload", "skipped", "local engine")
    state.task("Run", "running")
    for name in state.steps:
        state.step(name, "running", log=f".kale/runs/r1/{name}.log")
        state.step(name, "succeeded", notebook=f".kale/runs/r1/{name}.ipynb")
    state.add_metrics({"accuracy": 0.93})
    state.task("Run", "done", "3 steps succeeded")
    state.finish("succeeded")


def new_state(steps=("load", "train", "evaluate"), **kw):
    return RunState("r1", "demo", "exp", "local", steps=list(steps), parameters=kw.pop("parameters", {"lr": 0.1}))


def text_view(state, tmp_path=None):
    out = io.StringIO()
    TextView(state, Links(tmp_path), stream=out).start()
    return out


def test_success_transitions_in_text_and_html(tmp_path):
    state = new_state()
    out = text_view(state, tmp_path)
    run_to_success(state)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("Kale run r1 · pipeline demo")
    assert not any("◔ Validate" in l for l in lines), "quick tasks print their outcome only"
    assert lines.index(next(l for l in lines if "✓ Run" in l)) > \
        lines.index(next(l for l in lines if "◔ Run" in l))
    running = next(l for l in lines if "◔ train running" in l)
    assert "(log:" in running and "(notebook:" not in running, "a running step links its live log"
    assert all("(log:" not in l for l in lines if l.startswith("    ✓")), "no links for steps that went well"
    assert [l.split()[1] for l in lines if l.startswith("    ✓")] == ["load", "train", "evaluate"]
    assert lines[-1].startswith("Run r1 succeeded in ") and "accuracy=0.93" in lines[-1]
    assert not any("pending" in l for l in lines), "pending rows that never changed are not printed"

    page = Page(render_html(state, Links(tmp_path)))
    assert page.attrs[0]["data-status"] == "succeeded"
    assert page.rows() == [("Validate", "done"), ("Snapshot", "done"), ("Compile", "done"),
                           ("Upload", "skipped"), ("Run", "done"), ("load", "succeeded"),
                           ("train", "succeeded"), ("evaluate", "succeeded")]
    hrefs = [a["href"] for a in page.attrs if "href" in a]
    assert hrefs[:3] == ["validation.html", ".kale/runs/r1/snapshot.json", ".kale/runs/r1/pipeline.yaml"]
    assert ".kale/runs/r1/train.ipynb" in hrefs and ".kale/runs/r1/train.log" in hrefs


def test_a_note_that_ends_prints_no_line_of_its_own(tmp_path):
    state = new_state()
    out = text_view(state, tmp_path)
    state.task("Run", "running")
    state.task("Run", "running", "waiting for the warm worker to start")
    state.task("Run", "running", "")  # the worker is ready: nothing new to say
    state.step("load", "running")
    state.task("Run", "running", "waiting again")
    runs = [line.split(None, 3)[3:] for line in out.getvalue().splitlines() if "◔ Run" in line]
    assert runs == [[], ["waiting for the warm worker to start"], ["waiting again"]]


def test_failure_in_the_middle_turns_red_and_stays(tmp_path):
    state = new_state()
    out = text_view(state, tmp_path)
    state.task("Run", "running")
    state.step("load", "running")
    state.step("load", "succeeded")
    state.step("train", "running")
    state.step("train", "failed", message="ZeroDivisionError: division by zero",
               traceback="\x1b[31mTraceback (most recent call last)\x1b[0m\n  x = 1/0\n"
                         "\x1b[31mZeroDivisionError\x1b[0m: division by zero\n")
    state.step("evaluate", "skipped", message="upstream step train failed")
    state.task("Run", "failed", "step train failed")
    state.finish("failed", "step train failed: ZeroDivisionError: division by zero")

    text = out.getvalue()
    assert "✗ train failed" in text and "  x = 1/0" in text
    assert text.count("ZeroDivisionError: division by zero") == 1, "the row says it; the traceback under it does not"
    assert "– evaluate skipped" in text
    assert text.splitlines()[-1].startswith("Run r1 failed")

    markup = render_html(state, Links(tmp_path))
    page = Page(markup)
    assert page.attrs[0]["data-status"] == "failed"
    failed = [a for a in page.attrs if a.get("data-name") == "train"][0]
    assert failed["data-status"] == "failed" and "#fdecea" in failed["style"]
    assert "details" in page.tags, "the traceback can be expanded"
    assert "\x1b" not in markup and "Traceback (most recent call last)" in markup
    assert markup.count("ZeroDivisionError: division by zero") == 1
    # a failed panel is never hidden: only the pictures' wrappers are, which their stylesheet shows (svg.box)
    inline = re.sub(r"<style>.*?</style>", "", markup)
    assert inline.count("display:none") == inline.count('<div class="kale-picture" style="display:none">') >= 1
    # the failed row keeps its status and colour through later events
    state.step("load", "succeeded", message="late event")
    assert ("train", "failed") in Page(render_html(state)).rows()


def test_cached_steps_show_where_their_outputs_came_from(tmp_path):
    state = new_state()
    state.task("Run", "running")
    state.step("load", "cached", cached_from="run-0001")
    state.step("train", "cached", cached_from="run-0001")
    state.step("evaluate", "running")
    state.step("evaluate", "succeeded")
    state.task("Run", "done")
    state.finish("succeeded")
    text = render_text(state, Links(tmp_path))
    assert "↺ load cached" in text and "(cached from run-0001)" in text
    page = Page(render_html(state, Links(tmp_path)))
    assert ("load", "cached") in page.rows() and ("evaluate", "succeeded") in page.rows()
    assert "cached from run-0001" in "".join(page.text)


def test_hostile_strings_are_escaped():
    state = RunState(HOSTILE, HOSTILE, HOSTILE, "local", steps=[HOSTILE], parameters={"p": HOSTILE})
    state.task("Validate", "failed", HOSTILE, **{HOSTILE: HOSTILE})
    state.step(HOSTILE, "failed", message=HOSTILE, traceback=HOSTILE, notebook=HOSTILE,
               links={"js": "javascript:alert(1)"})
    state.add_links(KFP='http://kfp/"onclick="alert(1)')
    state.finish("failed", HOSTILE)
    markup = render_html(state)
    page = Page(markup)
    assert "script" not in page.tags and "img" not in page.tags
    assert all(not k.startswith("on") for attrs in page.attrs for k in attrs)
    assert {urlsplit(a["href"]).scheme for a in page.attrs if "href" in a} == {"", "http"}
    assert HOSTILE in "".join(page.text), "the text is shown, only escaped"


def test_links_are_relative_to_the_notebook_and_kfp_links_open_a_new_tab(tmp_path):
    links = Links(tmp_path)
    assert links.href(tmp_path / ".kale" / "runs" / "r 1" / "a.ipynb") == ".kale/runs/r%201/a.ipynb"
    assert links.href("sub/report.html") == "sub/report.html"
    external = Page(links.anchor("run", "http://kfp.example/#/runs/details/abc")).attrs[0]
    assert external["target"] == "_blank" and external["href"] == "http://kfp.example/#/runs/details/abc"
    assert "target" not in Page(links.anchor("log", "a.log")).attrs[0]


def test_under_a_jupyter_server_run_files_link_to_its_file_server(tmp_path):
    from kale_magic.server.address import FileServer

    links = Links(tmp_path / "sub", FileServer("/user/a/kale-magic/files/", tmp_path))
    log = tmp_path / "sub" / ".kale" / "runs" / "r1" / "logs" / "a b.log"
    anchor = Page(links.anchor("log", log)).attrs[0]
    assert anchor["href"] == "/user/a/kale-magic/files/sub/.kale/runs/r1/logs/a%20b.log"
    assert anchor["target"] == "_blank"
    assert links.text("log", log) == "log: .kale/runs/r1/logs/a b.log"  # terminals show the path
    assert links.href(tmp_path / "sub" / "data.csv") == "data.csv"  # not a run file: relative as before
    assert links.href("http://kfp.example/#/runs") == "http://kfp.example/#/runs"


def test_terminal_ipython_gets_text_lines(capsys):
    shell = InteractiveShell.instance()
    try:
        assert panel.pick_mode(shell) == "text"
        state = new_state(steps=["only"])
        view = panel.show(state, mode="text")
        run_to_success(state)
        printed = capsys.readouterr().out
        assert "✓ only succeeded" in printed and "Run r1 succeeded" in printed
        assert repr(view) == render_text(state, view.links)
    finally:
        InteractiveShell.clear_instance()


def test_unknown_mode_is_a_user_error():
    from kale_magic.errors import KaleError

    with pytest.raises(KaleError, match="Unknown panel mode 'fancy'"):
        panel.show(new_state(), mode="fancy")


def test_throttle_coalesces_bursts_and_the_last_change_is_drawn():
    drawn = []
    throttle = Throttle(lambda: drawn.append(len(drawn)), interval=30.0)
    for _ in range(1000):
        throttle.poke()
    assert drawn == [0], "one draw at once, the rest wait for the window"
    throttle.close()
    throttle.poke()
    assert drawn == [0]


def test_a_view_started_after_the_run_finished_draws_the_final_state(tmp_path):
    state = new_state(steps=["a"])
    run_to_success(state)
    out = text_view(state, tmp_path)
    assert out.getvalue().splitlines()[-1].startswith("Run r1 succeeded")


def test_kfp_run_links_open_the_kfp_ui_in_a_new_tab(tmp_path):
    ui = "http://127.0.0.1:8080/#"
    state = RunState("kfp-run-1", "demo", "exp", "kfp", steps=["train"])
    state.task("Compile", "done", "pipeline YAML", YAML=str(tmp_path / ".kale" / "runs" / "x" / "pipeline.yaml"))
    state.task("Upload", "done", "version v2", pipeline=f"{ui}/pipelines/details/p1",
               version=f"{ui}/pipelines/details/p1/version/v2")
    state.task("Run", "running", run=f"{ui}/runs/details/kfp-run-1")
    state.step("train", "running", links={"logs": f"{ui}/runs/details/kfp-run-1?node=train"})
    state.step("train", "succeeded")
    state.add_links(run=f"{ui}/runs/details/kfp-run-1")
    state.task("Run", "done")
    state.finish("succeeded")
    page = Page(render_html(state, Links(tmp_path)))
    anchors = {a["href"]: a for a in page.attrs if "href" in a}
    kfp = [a for href, a in anchors.items() if href.startswith("http")]
    assert len(kfp) == 4 and all(a["target"] == "_blank" and "noopener" in a["rel"] for a in kfp)
    assert ".kale/runs/x/pipeline.yaml" in anchors and "target" not in anchors[".kale/runs/x/pipeline.yaml"]
    text = render_text(state, Links(tmp_path))
    assert f"(run: {ui}/runs/details/kfp-run-1)" in text and "(YAML: .kale/runs/x/pipeline.yaml)" in text


def test_parameters_are_shown_in_the_header(tmp_path):
    state = new_state(parameters={"lr": 0.1, "name": "a<b>"})
    assert "lr=0.1, name='a<b>'" in render_text(state)
    markup = render_html(state)
    assert "parameters: lr=0.1, name=&#x27;a&lt;b&gt;&#x27;" in markup


TERMINAL = "\x1b]0;pwned\x07\x1b[31mred\x1b[2K\r\x08\x9b1Aend"  # window title, colour, line erase, CR, BS, CSI


def test_terminal_lines_show_control_characters_escaped(tmp_path):
    """Names, values and errors reach the user's terminal: no escape sequence acts on it."""
    state = RunState("r1", TERMINAL, TERMINAL, "local", steps=["train"], parameters={"p": TERMINAL})
    state.task("Validate", "done", TERMINAL)
    state.task("Run", "running")
    state.step("train", "failed", message=TERMINAL, traceback=TERMINAL)
    state.add_metrics({TERMINAL: 1})
    state.finish("failed", TERMINAL)
    for text in (render_text(state), text_view(state, tmp_path).getvalue()):
        assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", text), text
        assert "\\x1b]0;pwned\\x07" in text and "\\x9b1Aend" in text
