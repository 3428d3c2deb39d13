"""%kale_runs views: runs side by side, best values, the metric plot, comparing two runs."""

import re
import sys
from html.parser import HTMLParser

import pytest

from kale_magic.history.store import RunRecord, RunStore, StepRecord
from kale_magic.history.views import RunComparison, RunsTable, lower_is_better, metric_svg, runs_view as view


class Cells(HTMLParser):
    """Table cells (text, style) per row, as a browser reads them; also the document's tags."""

    def __init__(self, text):
        super().__init__()
        self.rows, self.tags, self._cell = [], [], None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "tr":
            self.rows.append([])
        if tag in ("td", "th"):
            self._cell = [dict(attrs).get("id", ""), dict(attrs).get("style", ""), ""]

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[2] += data

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append(tuple(self._cell))
            self._cell = None


def three_runs(tmp_path):
    store = RunStore(tmp_path / "runs.db")
    for i, (lr, acc, loss, code) in enumerate([(0.1, 0.81, 0.52, "fit(a)"), (0.01, 0.93, 0.21, "fit(a)"),
                                               (1.0, 0.64, 0.90, "fit(b)")]):
        store.save(RunRecord(f"run-{i}", "exp", "demo", "local", "succeeded", 1000.0 + i, 1001.0 + i,
                             parameters={"lr": lr, "note": "<script>x</script>"},
                             metrics={"accuracy": acc, "loss": loss},
                             steps=[StepRecord("load", "succeeded", 1.0, code_hash="h-load"),
                                    StepRecord("train", "succeeded", 2.0, code_hash=f"h-{code}")]))
    store.save(RunRecord("other", "elsewhere", "demo", "local", "failed", 900.0))
    return store


def highlighted(html_text):
    """Values of cells carrying the best-value style, found through the Styler's CSS or inline styles."""
    styled_ids = set(re.findall(r"#(T_\w+_row\d+_col\d+)", html_text.split("</style>")[0])) \
        if "<style" in html_text else set()
    cells = [c for row in Cells(html_text).rows for c in row]
    return sorted(text.strip() for cid, style, text in cells
                  if cid in styled_ids or "background-color:#c8e6c9" in style)


def test_three_runs_side_by_side_with_the_best_values_highlighted(tmp_path):
    table = view(three_runs(tmp_path), experiment="exp")
    frame = table.frame
    assert list(frame.index) == ["run-0", "run-1", "run-2"]
    assert list(frame["lr"]) == [0.1, 0.01, 1.0] and list(frame["accuracy"]) == [0.81, 0.93, 0.64]
    html_text = table._repr_html_()
    assert highlighted(html_text) == ["0.21", "0.93"], "max accuracy, min loss"
    assert "<script>x" not in html_text and "&lt;script&gt;x" in html_text
    text = repr(table)
    assert "run-1" in text and "best  accuracy: run-1, loss: run-1" in text


def test_without_pandas_the_table_is_plain_html(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    table = view(three_runs(tmp_path), experiment="exp", last=2)
    assert table.frame is None
    html_text = table._repr_html_()
    rows = Cells(html_text).rows
    assert [r[0][2] for r in rows[1:]] == ["run-1", "run-2"]
    assert highlighted(html_text) == ["0.21", "0.93"]
    assert "&lt;script&gt;" in html_text and "<script>" not in html_text
    assert "run-2" in repr(table) and "lr=1.0" in repr(table)


def test_plot_of_a_metric_over_runs(tmp_path):
    store = three_runs(tmp_path)
    table = view(store, experiment="exp", plot="accuracy")
    svg = table._repr_html_().split("<svg", 1)[1]
    circles = re.findall(r'<circle cx="([\d.]+)" cy="([\d.]+)"', svg)
    titles = re.findall(r"<title>([^<]*)</title>", svg)
    assert titles == ["run-0: 0.81", "run-1: 0.93", "run-2: 0.64"]
    ys = [float(y) for _, y in circles]
    assert ys[1] < ys[0] < ys[2], "higher values are drawn higher"
    assert [float(x) for x, _ in circles] == sorted(float(x) for x, _ in circles)
    assert "accuracy over runs: run-0=0.81, run-1=0.93, run-2=0.64" in repr(table)
    assert "No run has a numeric" in metric_svg(store.runs(), "missing")


def test_compare_two_runs(tmp_path):
    comparison = view(three_runs(tmp_path), compare=("run-0", "run-2"))
    assert isinstance(comparison, RunComparison)
    assert comparison.parameters[0] == ("lr", 0.1, 1.0, "changed")
    assert comparison.parameters[1][3] == ""
    assert comparison.metrics == [("accuracy", 0.81, 0.64, "-0.17"), ("loss", 0.52, 0.9, "+0.38")]
    assert comparison.changed_steps == ["train"]
    text = repr(comparison)
    assert "lr: 0.1 -> 1.0  [changed]" in text and "train: succeeded -> succeeded  [changed]" in text
    rows = Cells(comparison._repr_html_()).rows
    assert ("", "", "train") in [r[0] for r in rows]


def test_compare_reports_added_and_removed_steps(tmp_path):
    a = RunRecord("a", "e", "p", "local", "succeeded", 1.0, steps=[StepRecord("old", "succeeded")])
    b = RunRecord("b", "e", "p", "local", "failed", 2.0, steps=[StepRecord("new", "failed")])
    assert RunComparison(a, b).steps == [("old", "succeeded", None, "removed"),
                                         ("new", None, "failed", "added")]


def test_unknown_run_in_compare_is_one_sentence(tmp_path):
    from kale_magic.errors import KaleError

    with pytest.raises(KaleError, match="No run 'zzz'"):
        view(three_runs(tmp_path), compare=("run-0", "zzz"))


@pytest.mark.parametrize("name, lower", [("loss", True), ("val_error", True), ("rmse", True),
                                         ("accuracy", False), ("f1", False), ("train_time", True)])
def test_direction_of_better(name, lower):
    assert lower_is_better(name) is lower


def test_no_runs_yet(tmp_path):
    table = RunsTable([])
    assert repr(table) == "No runs recorded yet." and "No runs" in table._repr_html_()
