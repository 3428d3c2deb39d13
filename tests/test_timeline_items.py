"""The timeline draws a ``--foreach`` step's items as parallel bars grouped under the step (issue 24 point 6)."""

import xml.etree.ElementTree as ET

from kale_magic.panel.style import COLORS
from kale_magic.panel.timeline import ITEM_ROWS, timeline_svg
from kale_magic.run.state import StepState

NS = "{http://www.w3.org/2000/svg}"


def groups(svg):
    root = ET.fromstring(svg)
    return [g for g in root.iter(f"{NS}g") if (g.get("class") or "").startswith("kale-")
            and g.get("class") != "kale-axis"]


def test_items_are_parallel_bars_under_their_step_and_skipped_ones_have_no_bar():
    items = (StepState("train[0]", "succeeded", started=1.0, ended=3.0),
             StepState("train[1]", "succeeded", started=1.0, ended=2.0),
             StepState("train[2]", "skipped", message="condition m != 'svm' was false: m = 'svm'"),
             StepState("train[3]", "cached", started=1.0, ended=1.0, cached_from="r1"))
    steps = {"split": StepState("split", "succeeded", started=0.0, ended=1.0),
             "train": StepState("train", "succeeded", started=1.0, ended=3.0, items=items),
             "summary": StepState("summary", "succeeded", started=3.0, ended=3.5)}
    svg = timeline_svg(steps, {"train": ["split"], "summary": ["train"]})
    rows = [(g.get("class"), g.get("data-step")) for g in groups(svg)]
    assert rows == [("kale-bar", "split"), ("kale-bar kale-group", "train"),
                    ("kale-item", "train[0]"), ("kale-item", "train[1]"), ("kale-item", "train[2]"),
                    ("kale-item", "train[3]"), ("kale-bar", "summary")]
    by_name = {g.get("data-step"): g for g in groups(svg)}
    group = by_name["train"]
    assert group.get("data-items") == "4" and "train ×4" in "".join(group.itertext())
    assert group.find(f"{NS}rect") is None and group.find(f"{NS}path").get("class") == "kale-bracket"

    def extent(name):
        rect = by_name[name].find(f"{NS}rect")
        return float(rect.get("x")), float(rect.get("width"))

    (x0, w0), (x1, w1) = extent("train[0]"), extent("train[1]")
    assert x0 == x1 and w0 == 2 * w1, "items that started together are bars side by side in time"
    x_split, w_split = extent("split")
    assert x0 == x_split + w_split  # after the step it loops over
    assert by_name["train[2]"].find(f"{NS}rect") is None and "skipped" in "".join(by_name["train[2]"].itertext())
    assert by_name["train[3]"].find(f"{NS}rect").get("fill") == "#ffffff"  # cached: a hollow mark
    assert by_name["train[0]"].get("data-parent") == "train" and by_name["train[0]"].find(f"{NS}rect").get(
        "fill") == COLORS["succeeded"]
    height = float(ET.fromstring(svg).get("height"))
    assert height == 24 + 20 * 7 + 22  # a row per step and per item


def test_a_long_loop_shows_its_first_items_and_how_many_more():
    items = tuple(StepState(f"f[{i}]", "succeeded", started=0.0, ended=1.0) for i in range(ITEM_ROWS + 5))
    svg = timeline_svg({"f": StepState("f", "succeeded", started=0.0, ended=1.0, items=items)})
    assert sum(g.get("class") == "kale-item" for g in groups(svg)) == ITEM_ROWS
    more = next(t for t in ET.fromstring(svg).iter(f"{NS}text") if t.get("class") == "kale-more")
    assert more.text == "5 more items of f"


def test_a_run_s_panel_draws_its_items_in_the_timeline(kernel):
    from kale_magic.panel.render import render_html

    kernel.cells("%%parameters\nxs = [1, 2, 3]", '%%step sq --foreach x in xs --if "x != 2"\ny = x * x',
                 "%%step total\ns = sum(y)")
    run = kernel.kale_run()
    page = render_html(run.state)
    start = page.index('<svg xmlns="http://www.w3.org/2000/svg" class="kale-timeline"')
    svg = ET.fromstring(page[start:page.index("</svg>", start) + len("</svg>")])
    items = {g.get("data-step"): g.get("data-status") for g in svg.iter(f"{NS}g") if g.get("class") == "kale-item"}
    assert items == {"sq[0]": "succeeded", "sq[1]": "skipped", "sq[2]": "succeeded"}
