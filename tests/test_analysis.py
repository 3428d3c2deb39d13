"""Names read, written and mutated per cell: pure, parametrized."""

import pytest

from kale_magic.plan.analysis import analyze, function_closure, literal_parameters, metric_names
from kale_magic.errors import ValidationError


@pytest.mark.parametrize("source, reads, writes", [
    ("x = 1\ny = x + z", ["z"], {"x", "y"}),
    ("x = x + 1", ["x"], {"x"}),
    ("x += 1", ["x"], {"x"}),
    ("for i in range(n):\n    total = i", ["range", "n"], {"i", "total"}),
    ("import numpy as np\nimport os.path\na = np.ones(3)", [], {"np", "os", "a"}),
    ("from m import f as g, h", [], {"g", "h"}),
    ("y = [a * b for a in data]", ["data", "b"], {"y"}),
    ("def f(v):\n    return v * scale\nout = f(1)", ["scale"], {"f", "out"}),
    ("def f():\n    return later\nlater = 1\nf()", [], {"f", "later"}),
    ("g = lambda v: v + offset", ["offset"], {"g"}),
    ("if (m := compute()) > 1:\n    pass", ["compute"], {"m"}),
    ("try:\n    pass\nexcept ValueError as e:\n    msg = str(e)", ["ValueError", "str"], {"e", "msg"}),
    ("class C(Base):\n    k = const", ["Base", "const"], {"C"}),
    ("with open(p) as fh:\n    text = fh.read()", ["open", "p"], {"fh", "text"}),
    ("del x", [], {"x"}),
    ("def f():\n    global counter\n    counter = 1", [], {"f", "counter"}),
])
def test_reads_and_writes(source, reads, writes):
    names = analyze([source])
    assert names.reads == reads
    assert names.writes == writes


@pytest.mark.parametrize("source, mutated", [
    ("lst.append(1)", {"lst"}),
    ("d[k] = v", {"d"}),
    ("d['a']['b'] = 1", {"d"}),
    ("df.x = 3", {"df"}),
    ("df.dropna(inplace=True)", {"df"}),
    ("df.dropna()", set()),
    ("model.fit(X, y)", {"model"}),
    ("t.add_(1)", {"t"}),
    ("np.random.shuffle(arr)", {"arr", "np"}),  # the planner never marshals modules
    ("rng.shuffle(arr)", {"arr", "rng"}),
    ("del d[k]", {"d"}),
    ("d[k] += 1", {"d"}),
    ("x.mean()", set()),
    ("model = Model().fit(X, y)", set()),
    ("make().append(1)", set()),
    ("print(x.shape)", set()),
])
def test_in_place_changes_count_as_writes(source, mutated):
    names = analyze([source])
    assert names.mutates == mutated
    assert mutated <= set(names.reads)


@pytest.mark.parametrize("source, mutated", [
    ("for m in models.values():\n    m.fit(X, y)", {"m", "models"}),
    ("for name, m in models.items():\n    m.fit(X, y)", {"m", "models"}),
    ("for m in models:\n    m.append(1)", {"m", "models"}),
    ("for i, m in enumerate(zip(names, models)):\n    m[1].fit(X)", {"m", "models", "names"}),
    ("for m in models['svm'], models['tree']:\n    m.fit(X)", {"m", "models"}),
    ("m = models['svm']\nm.fit(X, y)", {"m", "models"}),
    ("m = models.get('svm')\nm.coef_ = 0", {"m", "models"}),
    ("m = cfg.model\nm.layers[0] = None", {"m", "cfg"}),
    ("a, b = models.values()\nb.fit(X)", {"b", "models"}),
    ("[m.fit(X, y) for m in models.values()]", {"models"}),
    ("m = models['svm']\nm = clone(m)\nm.fit(X)", {"m"}),  # rebound: no longer the container's item
    ("for i in range(n):\n    i.real", set()),
    ("for m in models.values():\n    print(m.score(X))", set()),
])
def test_a_change_through_an_alias_changes_the_container(source, mutated):
    names = analyze([source])
    assert names.mutates == mutated
    assert not names.unsure


def test_a_change_the_analysis_cannot_trace_is_named():
    names = analyze(["for m in pick(models, 2):\n    m.fit(X, y)"])
    assert names.unsure == {"m": "pick(models, 2)"} and "models" not in names.mutates


def test_cells_of_one_step_share_bindings():
    names = analyze(["a = 1", "b = a + c"])
    assert names.reads == ["c"]


def test_star_import_is_flagged():
    assert analyze(["from os.path import *"]).star_import


def test_function_closure_is_transitive():
    code = analyze(["def f():\n    return g() + a\ndef g():\n    return b"])
    assert function_closure(["f"], code.functions) == {"g", "a", "b"}
    assert code.deferred == {"a", "b"}


def test_ipython_transformed_source_parses():
    from IPython.core.inputtransformer2 import TransformerManager

    python = TransformerManager().transform_cell("%time y = x * 2\nfiles = !ls\n!echo hi\n")
    names = analyze([python])
    assert "x" in names.reads and {"y", "files"} <= names.writes


def test_literal_parameters():
    params = literal_parameters("n = 10\nname = 'a\\'b'\nrates = [0.1, 1e-3]\nflag: bool = True\n")
    assert params == {"n": 10, "name": "a'b", "rates": [0.1, 1e-3], "flag": True}


@pytest.mark.parametrize("source, fragment", [
    ("n = int('3')", "must be a literal"),
    ("import os", "only 'name = value'"),
    ("a = b = 1", "only 'name = value'"),
])
def test_non_literal_parameters_are_refused(source, fragment):
    with pytest.raises(ValidationError, match=fragment):
        literal_parameters(source)


def test_metric_names():
    assert metric_names("acc\nprint(loss)\nacc") == ["acc", "loss"]
    with pytest.raises(ValidationError, match="each line must name one variable"):
        metric_names("acc * 100")


def test_syntax_error_names_the_cell():
    with pytest.raises(ValidationError, match="step 'train' has a syntax error on line 2"):
        analyze(["a = 1\nb = (", ""], "step 'train'")
