"""The pipeline graph and the run timeline: parsed SVG, statuses, layout properties, escaping, stable bytes."""

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from kale_magic.panel.graph import MAX_WIDTH, graph_html, graph_svg, layout
from kale_magic.panel.svg import MAX_HEIGHT
from kale_magic.panel.style import COLORS, ICONS
from kale_magic.panel.timeline import critical_path, timeline_svg
from kale_magic.plan import Plan, StepPlan, Transfer
from kale_magic.run.state import StepState

ROOT = Path(__file__).resolve().parents[1]
NS = "{http://www.w3.org/2000/svg}"
HOSTILE = '<script>alert("x")</script>\'"><img src=x onerror=alert(1)>&amp;'


def pipeline(spec, params=None, name="demo"):
    """``{step: {parent: "names,comma,separated" or "" for order only}}`` in notebook order."""
    transfers = {}
    for step, parents in spec.items():
        for parent, names in parents.items():
            for value in filter(None, names.split(",")):
                transfers[parent, value] = Transfer(value, parent, "numpy", "numpy.ndarray", "Dataset", 2048)
    steps = {}
    for step, parents in spec.items():
        inputs = tuple(transfers[p, v] for p, names in parents.items() for v in filter(None, names.split(",")))
        outputs = tuple(t for (p, _), t in transfers.items() if p == step)
        steps[step] = StepPlan(step, ("pass",), tuple(parents), tuple((params or {}).get(step, ())),
                               inputs, outputs, ())
    return Plan(name, steps)


CHAIN = {"load": {}, "train": {"load": "x,y"}, "evaluate": {"train": "model"}}
DIAMOND = {"a": {}, "b": {"a": "x"}, "c": {"a": "x"}, "d": {"b": "left", "c": "right"}}
FAN = {"root": {}, **{f"work_{i}": {"root": "data"} for i in range(30)},
       "merge": {f"work_{i}": f"part_{i}" for i in range(30)}}
# b fails, c (after b) is skipped, d waits on c by order only and reads z from a; e reads a's x and d's w.
BROKEN = {"a": {}, "b": {"a": "x"}, "c": {"b": "y"}, "d": {"a": "z", "c": ""}, "e": {"a": "x", "d": "w"}}


class Picture:
    """Nodes, edges and value labels of a graph SVG, as an XML parser sees them."""

    def __init__(self, svg: str):
        self.root = ET.fromstring(svg)
        groups = list(self.root.iter(f"{NS}g"))
        self.nodes = {g.get("data-step"): g for g in groups if g.get("class") == "kale-node"}
        self.edges = {(g.get("data-from"), g.get("data-to")): g.get("data-values") for g in groups
                      if g.get("class") == "kale-edge"}
        self.values = [g for g in groups if g.get("class") == "kale-value"]

    def status(self, name):
        return self.nodes[name].get("data-status")

    def rect(self, group):
        r = group.find(f"{NS}rect")
        x, y, w, h = (float(r.get(k)) for k in ("x", "y", "width", "height"))
        return x, y, x + w, y + h

    def centre(self, name):
        x0, y0, x1, y1 = self.rect(self.nodes[name])
        return (x0 + x1) / 2, (y0 + y1) / 2

    def texts(self, group, css_class):
        return [t.text for t in group.iter(f"{NS}text") if t.get("class") == css_class]

    def boxes(self):
        return [self.rect(g) for g in [*self.nodes.values(), *self.values]]


def assert_no_overlaps(picture):
    boxes = picture.boxes()
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], f"{a} overlaps {b}"


def test_chain_top_down_with_values_on_edges():
    plan = pipeline(CHAIN, params={"train": ("lr", "epochs")})
    pic = Picture(graph_svg(plan))
    assert list(pic.nodes) == ["load", "train", "evaluate"]
    assert all(pic.status(n) == "planned" for n in pic.nodes)
    assert pic.edges == {("load", "train"): "x,y", ("train", "evaluate"): "model"}
    (xs, ys) = zip(*(pic.centre(n) for n in pic.nodes))
    assert len(set(xs)) == 1 and ys[0] < ys[1] < ys[2], "a chain is a straight column, top down"
    labels = {v.get("data-values"): (pic.texts(v, "kale-value-names"), pic.texts(v, "kale-value-info"))
              for v in pic.values}
    assert labels == {"x,y": (["x, y"], ["2 values · 4.0 KiB"]), "model": (["model"], ["ndarray · 2.0 KiB"])}
    tips = [v.find(f"{NS}title").text for v in pic.values]
    assert "x: numpy.ndarray, 2.0 KiB, numpy backend\ny: numpy.ndarray, 2.0 KiB, numpy backend" in tips
    assert pic.texts(pic.nodes["train"], "kale-node-params") == ["⚙ lr, epochs"]
    assert pic.texts(pic.nodes["load"], "kale-node-params") == []
    assert "parameters: lr, epochs" in pic.nodes["train"].find(f"{NS}title").text
    assert_no_overlaps(pic)


def test_diamond_branches_side_by_side_and_a_shared_value_drawn_once():
    pic = Picture(graph_svg(pipeline(DIAMOND)))
    assert set(pic.edges) == {("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")}
    (ax, ay), (bx, by), (cx, cy), (dx, dy) = (pic.centre(n) for n in "abcd")
    assert by == cy and bx < cx, "independent branches sit side by side"
    assert ay < by < dy
    assert ax == pytest.approx((bx + cx) / 2) and dx == pytest.approx(ax), "the diamond is symmetric"
    assert sorted(v.get("data-values") for v in pic.values) == ["left", "right", "x"], \
        "x goes to b and c under one label"
    assert_no_overlaps(pic)


def test_fan_out_of_30_is_drawn_left_to_right_so_it_stacks_vertically():
    plan = pipeline(FAN)
    geo = layout(plan)
    pic = Picture(graph_svg(plan))
    assert len(pic.nodes) == 32 and len(pic.edges) == 60 and len(pic.values) == 31
    assert not geo.vertical and geo.width <= MAX_WIDTH < geo.height
    columns = {pic.centre(f"work_{i}")[0] for i in range(30)}
    rows = [pic.centre(f"work_{i}")[1] for i in range(30)]
    assert len(columns) == 1 and rows == sorted(rows), "the 30 workers form one column, in notebook order"
    (rx, ry), (mx, my) = pic.centre("root"), pic.centre("merge")
    assert rx < columns.pop() < mx and ry == pytest.approx(my) == pytest.approx((rows[0] + rows[-1]) / 2)
    assert_no_overlaps(pic)
    html = graph_html(plan)
    assert html.startswith('<div class="kale-graph-box"') and f"max-height:{MAX_HEIGHT}px" in html
    assert "overflow:auto" in html


def test_statuses_icons_colours_and_the_failed_nodes_link():
    plan = pipeline(BROKEN)
    states = {
        "a": StepState("a", "succeeded", started=1.0, ended=2.0),
        "b": StepState("b", "failed", started=2.0, ended=3.0, message="ValueError: bad <input>"),
        "c": StepState("c", "skipped", message="skipped: b failed"),
        "d": StepState("d", "running", started=2.0),
        "e": StepState("e", "pending"),
    }
    pic = Picture(graph_svg(plan, states, href=lambda name: f"/kale-magic/files/.kale/runs/r1/{name}.ipynb"))
    assert {n: pic.status(n) for n in pic.nodes} == {s.name: s.status for s in states.values()}
    for name, state in states.items():
        node = pic.nodes[name]
        assert pic.texts(node, "kale-node-icon") == [ICONS[state.status]]
        assert node.find(f"{NS}rect").get("stroke") == COLORS[state.status]
    failed = pic.nodes["b"].find(f"{NS}rect")
    assert failed.get("fill") == "#fdecea" and float(failed.get("stroke-width")) > 2
    links = [a for a in pic.root.iter(f"{NS}a")]
    assert [a.get("href") for a in links] == ["/kale-magic/files/.kale/runs/r1/b.ipynb"], "only the failed node links"
    assert links[0].find(f"{NS}g").get("data-step") == "b"
    assert pic.nodes["b"].find(f"{NS}title").text.splitlines()[1] == "failed: ValueError: bad <input>"
    assert pic.nodes["c"].find(f"{NS}rect").get("stroke-dasharray"), "a skipped node is dashed"
    animated = [n for n, g in pic.nodes.items() if g.find(f"{NS}rect/{NS}animate") is not None]
    assert animated == ["d"], "only the running node moves"
    assert pic.edges[("c", "d")] == "" and pic.edges[("a", "d")] == "z"
    order_only = [g for g in pic.root.iter(f"{NS}g") if g.get("data-to") == "d" and g.get("data-from") == "c"]
    assert order_only[0].find(f"{NS}path").get("stroke-dasharray"), "an order-only edge is dashed"
    assert_no_overlaps(pic)


def test_statuses_do_not_move_the_nodes():
    plan = pipeline(BROKEN)
    planned = Picture(graph_svg(plan))
    running = Picture(graph_svg(plan, {"b": StepState("b", "running")}))
    assert all(planned.rect(planned.nodes[n]) == running.rect(running.nodes[n]) for n in planned.nodes)


def test_an_external_error_link_opens_a_new_tab():
    plan = pipeline({"a": {}})
    svg = graph_svg(plan, {"a": StepState("a", "failed")}, href=lambda _: "https://kfp.example/#/runs/1")
    link = next(ET.fromstring(svg).iter(f"{NS}a"))
    assert link.get("target") == "_blank" and "noopener" in link.get("rel")


@pytest.mark.parametrize("spec", [CHAIN, DIAMOND, FAN, BROKEN])
def test_same_plan_same_bytes_across_processes(spec):
    """Built twice from fresh objects, and in interpreters with other hash seeds: identical SVG."""
    here = graph_svg(pipeline(spec))
    assert graph_svg(pipeline(spec)) == here
    code = (f"import sys; sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / 'tests')!r}]\n"
            "from test_graph import pipeline, graph_svg\n"
            f"sys.stdout.write(graph_svg(pipeline({spec!r})))")
    for seed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONHASHSEED": seed})
        assert out.stdout == here


def test_hostile_step_and_value_names_are_escaped():
    evil_step, evil_value = HOSTILE, "v\x1b[31m<b>&\x01"
    plan = pipeline({evil_step: {}, "next": {evil_step: evil_value}})
    states = {evil_step: StepState(evil_step, "failed", message=HOSTILE), "next": StepState("next", "pending")}
    svg = graph_svg(plan, states, href=lambda _: '/x" onclick="alert(1)')
    pic = Picture(svg)  # parses: nothing broke out of an attribute or element
    assert "<script" not in svg and "<img" not in svg and "onclick=\"" not in svg
    assert not [e for e in pic.root.iter() if e.tag not in {f"{NS}{t}" for t in
                                                             ("svg", "g", "a", "rect", "text", "title", "path")}]
    assert set(pic.nodes) == {evil_step, "next"}, "attributes hold the names exactly"
    assert pic.texts(pic.nodes[evil_step], "kale-node-name") == [HOSTILE[:23] + "…"], "cut to 24 cells"
    assert pic.edges == {(evil_step, "next"): "v<b>&\\x01"}, "colour codes are dropped, control characters escaped"
    assert next(pic.root.iter(f"{NS}a")).get("href") == '/x" onclick="alert(1)'


def test_fifty_steps_stay_apart():
    """A wide and deep pipeline: 10 stages of 5 parallel steps, each reading the stage before."""
    spec = {"start": {}}
    for stage in range(10):
        before = [f"s{stage - 1}_{j}" for j in range(5)] if stage else ["start"]
        for j in range(5):
            spec[f"s{stage}_{j}"] = {p: f"v_{p}" for p in before if p.endswith(str(j)) or p == "start"}
    spec["end"] = {f"s9_{j}": "" for j in range(5)}
    pic = Picture(graph_svg(pipeline(spec)))
    assert len(pic.nodes) == 52
    assert_no_overlaps(pic)


# -- timeline --------------------------------------------------------------------
def bars(svg):
    root = ET.fromstring(svg)
    return {g.get("data-step"): g for g in root.iter(f"{NS}g") if g.get("class") == "kale-bar"}


TIMES = {
    "load": StepState("load", "succeeded", started=100.0, ended=101.0),
    "fast": StepState("fast", "succeeded", started=101.0, ended=101.5),
    "reuse": StepState("reuse", "cached", started=101.0, ended=101.0, cached_from="r0007"),
    "slow": StepState("slow", "failed", started=101.0, ended=104.0, message="boom"),
    "last": StepState("last", "skipped"),
}
PARENTS = {"fast": ["load"], "reuse": ["load"], "slow": ["load"], "last": ["fast", "slow", "reuse"]}


def test_timeline_bars_from_start_to_end():
    svg = timeline_svg(TIMES, PARENTS)
    rows = bars(svg)
    assert list(rows) == list(TIMES) and [g.get("data-status") for g in rows.values()] == \
        ["succeeded", "succeeded", "cached", "failed", "skipped"]

    def extent(name):
        rect = rows[name].find(f"{NS}rect")
        return float(rect.get("x")), float(rect.get("width"))

    (x_load, w_load), (x_fast, w_fast), (x_slow, w_slow) = extent("load"), extent("fast"), extent("slow")
    assert x_fast == pytest.approx(x_load + w_load) == pytest.approx(x_slow), "fast and slow ran together"
    assert w_slow == pytest.approx(3 * w_load) == pytest.approx(6 * w_fast)
    assert rows["slow"].find(f"{NS}rect").get("fill") == COLORS["failed"]
    cached = rows["reuse"]
    assert cached.find(f"{NS}rect").get("fill") == "#ffffff", "a cached step is a hollow mark"
    assert "cached from r0007" in "".join(cached.itertext())
    assert rows["last"].find(f"{NS}rect") is None and "skipped" in "".join(rows["last"].itertext())
    assert [n for n, g in rows.items() if g.get("data-critical")] == ["load", "slow"]
    legend = "".join(next(e for e in ET.fromstring(svg).iter(f"{NS}text") if e.get("class") == "kale-legend")
                     .itertext())
    assert legend == "outlined: critical path, 2 steps, 4.00 s · slowest: slow, 3.00 s"
    assert timeline_svg(TIMES, PARENTS) == svg


def test_critical_path_follows_the_parent_that_ended_last():
    assert critical_path(TIMES, PARENTS) == ["load", "slow"]
    assert critical_path(TIMES, {}) == ["slow"]
    assert critical_path({"a": StepState("a", "pending")}, {}) == []


def test_timeline_of_a_running_step_ends_now_and_pulses():
    rows = bars(timeline_svg({"a": StepState("a", "running", started=10.0)}, now=12.0))
    rect = rows["a"].find(f"{NS}rect")
    assert rect.find(f"{NS}animate") is not None
    assert "took 2.00 s" in rows["a"].find(f"{NS}title").text


def test_timeline_escapes_names():
    svg = timeline_svg({HOSTILE: StepState(HOSTILE, "succeeded", started=0.0, ended=1.0)})
    assert "<script" not in svg and list(bars(svg)) == [HOSTILE]


# -- in the panel ------------------------------------------------------------------
def picture_in(markup, css_class):
    """The one ``<svg class=css_class>`` inside panel HTML, parsed."""
    start = markup.index(f'<svg xmlns="http://www.w3.org/2000/svg" class="{css_class}"')
    return markup[start:markup.index("</svg>", start) + len("</svg>")]


def test_the_panel_carries_the_live_graph_and_the_timeline_after_the_run(tmp_path):
    from kale_magic.panel.render import Links, StateReport, render_html
    from kale_magic.run.state import RunState

    plan = pipeline(DIAMOND)
    state = RunState("r1", "demo", "exp", "local")
    report = StateReport(state, Links(tmp_path))
    state.task("Validate", "running")
    assert "kale-graph" not in report._repr_html_(), "no graph before there is a plan"
    state.set_plan(plan)
    state.task("Validate", "done")
    markup = report._repr_html_()
    run_row, graph, first_step = (markup.index(s) for s in
                                  ('data-name="Run"', 'class="kale-graph"', 'class="kale-row kale-step"'))
    assert run_row < graph < first_step, "the graph sits above the step rows"
    assert {Picture(picture_in(markup, "kale-graph")).status(n) for n in "abcd"} == {"pending"}

    state.task("Run", "running")
    state.step("a", "succeeded", started=100.0, ended=101.0)
    state.step("b", "running", started=101.0)
    state.step("c", "failed", started=101.0, ended=102.0, message="KeyError: 'k'",
               notebook=str(tmp_path / ".kale" / "runs" / "r1" / "executed" / "c.ipynb"))
    live = Picture(picture_in(report._repr_html_(), "kale-graph"))
    assert {n: live.status(n) for n in "abcd"} == {"a": "succeeded", "b": "running", "c": "failed", "d": "pending"}
    assert live.nodes["b"].find(f"{NS}rect/{NS}animate") is not None
    assert not list(live.root.iter(f"{NS}a")), \
        "no link on a node when the link is relative: JupyterLab cannot rewrite an SVG link (the row has it)"
    assert "timeline" not in report._repr_html_(), "the timeline comes when the run has ended"

    state.step("b", "succeeded", ended=103.0)
    state.step("d", "skipped", message="upstream step c failed")
    state.task("Run", "failed", "step c failed")
    state.finish("failed", "step c failed")
    final = render_html(state, Links(tmp_path))
    assert final.index('class="kale-footer"') < final.index('class="kale-run-timeline"')
    rows = bars(picture_in(final, "kale-timeline"))
    assert {n: g.get("data-status") for n, g in rows.items()} == \
        {"a": "succeeded", "b": "succeeded", "c": "failed", "d": "skipped"}
    assert [n for n, g in rows.items() if g.get("data-critical")] == ["a", "b"], "b ended last, after a"
    assert {Picture(picture_in(final, "kale-graph")).status(n) for n in "abcd"} == \
        {"succeeded", "failed", "skipped"}


def test_a_live_graph_is_laid_out_once_and_redrawn_only_on_change(monkeypatch):
    from kale_magic.panel import graph

    calls, original = [], graph.layout
    monkeypatch.setattr(graph, "layout", lambda plan: calls.append(plan) or original(plan))
    live, plan = graph.LiveGraph(), pipeline(CHAIN)
    steps = {n: StepState(n) for n in plan.steps}
    first = live.html(plan, steps, lambda _: None)
    assert live.html(plan, dict(steps), lambda _: None) is first, "a tick with nothing changed draws nothing"
    steps["load"] = StepState("load", "running", started=1.0)
    assert 'data-status="running"' in live.html(plan, steps, lambda _: None)
    assert len(calls) == 1


def test_kale_show_displays_the_graph_and_keeps_the_text(kernel, capsys):
    from kale_magic.panel.plan_view import PlanView

    kernel.cells("%%imports\nimport math", "%%parameters\nlr = 0.5", "%%step a\narr = [math.pi * lr] * 4",
                 "%%step b\ntotal = sum(arr)", "%%step c --after a\nhalf = [x / 2 for x in arr]")
    capsys.readouterr()
    kernel.run("%kale_show")
    printed = capsys.readouterr().out
    assert "a -> b: arr" in printed and "Parameters: lr=0.5" in printed, "a terminal prints the text"
    data, _ = kernel.shell.display_formatter.format(PlanView(kernel.magics.plan()))
    assert printed.startswith(data["text/plain"] + "\nNotebook: no file found")  # then who the notebook is
    pic = Picture(picture_in(data["text/html"], "kale-graph"))
    assert list(pic.nodes) == ["a", "b", "c"], "%%imports is not a step"
    assert pic.edges == {("a", "b"): "arr", ("a", "c"): "arr"}
    assert pic.centre("b")[1] == pic.centre("c")[1], "independent branches side by side"
    assert pic.texts(pic.nodes["a"], "kale-node-params") == ["⚙ lr"]
    assert [v.get("data-values") for v in pic.values] == ["arr"]
    assert pic.texts(pic.values[0], "kale-value-info") == ["list"], "no size: lists are not measured"


def test_values_that_skip_a_generation_are_drawn_as_labelled_long_edges():
    """X_test, y_test go from features to evaluate, past train: the picture and the text show that flow."""
    from kale_magic.plan.report import plan_text

    steps = {"features": StepPlan("features", ("pass",), (), (), (), (), ())}
    made = {n: Transfer(n, "features", "numpy", "numpy.ndarray", "Dataset", 2048)
            for n in ("X_train", "X_test", "y_test")}
    model = Transfer("model", "train", "sklearn", "sklearn.svm.SVC", "Model", 4096)
    steps["features"] = StepPlan("features", ("pass",), (), (), (), tuple(made.values()), ())
    steps["train"] = StepPlan("train", ("pass",), ("features",), (), (made["X_train"],), (model,), ())
    steps["evaluate"] = StepPlan("evaluate", ("pass",), ("train",), (), (model, made["X_test"], made["y_test"]),
                                 (), ())
    plan = Plan("long", steps)
    pic = Picture(graph_svg(plan))
    assert pic.edges == {("features", "train"): "X_train", ("train", "evaluate"): "model",
                         ("features", "evaluate"): "X_test,y_test"}
    long = [g for g in pic.root.iter(f"{NS}g") if g.get("data-long") == "true"]
    assert [(g.get("data-from"), g.get("data-to")) for g in long] == [("features", "evaluate")]
    assert sorted(v.get("data-values") for v in pic.values) == ["X_test,y_test", "X_train", "model"]
    assert_no_overlaps(pic)
    text = plan_text(plan)
    assert "  features -> evaluate: X_test, y_test (a long edge: past the steps between them)" in text
    assert "  features -> train: X_train\n" in text


def _as_sanitized(html_text: str) -> str:
    """The words a reader sees of ``html_text`` after JupyterLab's sanitizer (untrusted output): ``<style>``
    dropped with its rules, ``<svg>`` and its elements dropped with their words kept, inline styles kept
    (``display`` is among the properties it allows), so an element with ``display:none`` hides its words."""
    from html.parser import HTMLParser

    class Reader(HTMLParser):
        def __init__(self):
            super().__init__()
            self.stack, self.words = [], []

        def handle_starttag(self, tag, attrs):
            style = (dict(attrs).get("style") or "").replace(" ", "")
            hidden = bool(self.stack and self.stack[-1][1]) or "display:none" in style
            self.stack.append((tag, hidden, tag == "style" or bool(self.stack and self.stack[-1][2])))

        def handle_startendtag(self, tag, attrs):
            pass

        def handle_endtag(self, tag):
            while self.stack and self.stack.pop()[0] != tag:
                pass

        def handle_data(self, data):
            if data.strip() and not (self.stack and (self.stack[-1][1] or self.stack[-1][2])):
                self.words.append(data.strip())

    reader = Reader()
    reader.feed(html_text)
    return " | ".join(reader.words)


def test_a_stripped_picture_shows_one_readable_line():
    """An untrusted notebook's panel: instead of every label and tooltip of the graph and the timeline run
    together, each picture's box shows one line saying what it is and how to get it back."""
    from kale_magic.panel.timeline import timeline_html

    graph = graph_html(pipeline(CHAIN), {"load": StepState("load", status="succeeded")})
    assert _as_sanitized(graph) == ("The pipeline's graph (3 steps) shows once the notebook is trusted (rerun "
                                    "the cell, or Trust Notebook in JupyterLab's command palette)")
    assert _as_sanitized(timeline_html(TIMES, PARENTS)).startswith("The timeline of 5 steps shows once")
    # Trusted, the box's own stylesheet shows the picture and hides the line (checked in a real
    # JupyterLab by tests/browser); the picture itself is unchanged.
    assert graph_svg(pipeline(CHAIN), {"load": StepState("load", status="succeeded")}) in graph
    assert ".kale-picture{display:block!important}.kale-untrusted{display:none}" in graph
