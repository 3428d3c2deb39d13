"""Each backend's values flow between two steps of a real %kale_run and come back equal (the oracle)."""

import json

import pytest

pytestmark = pytest.mark.slow  # torch, a heavy ML framework, in the steps

pytest.importorskip("pandas")
pytest.importorskip("sklearn")


def run(kernel, line=""):
    return kernel.shell.run_line_magic("kale_run", line)


def test_values_of_every_backend_flow_between_steps(kernel):
    torch = pytest.importorskip("torch")
    kernel.cells(
        "%%imports\nimport numpy as np\nimport pandas as pd\nimport torch\n"
        "from sklearn.linear_model import LogisticRegression",
        "%%functions\nclass Net(torch.nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        self.layer = torch.nn.Linear(3, 2)\n"
        "    def forward(self, x):\n        return self.layer(x).relu()\n"
        "def double(v):\n    return 2 * v",
        "%%step make\n"
        "arr = np.arange(12, dtype=np.float32).reshape(3, 4)\n"
        "scalar = np.float64(2.5)\n"
        "frame = pd.DataFrame({'x': [1.0, 2.0], 'c': pd.Categorical(['a', 'b']),\n"
        "                      't': pd.date_range('2024', periods=2, tz='UTC')})\n"
        "model = LogisticRegression().fit(np.array([[0.0], [1.0], [2.0], [3.0]]), [0, 0, 1, 1])\n"
        "torch.manual_seed(0)\nnet = Net()\ntensor = torch.ones(2, 3)\n"
        "info = {'n': 3, 'names': ('a', 'b')}\n"
        "fn = lambda v: double(v) + 1",
        "%%step use --after make\n"
        "summary = (arr.sum(), type(scalar).__name__, str(frame.dtypes['t']), list(frame['c'].cat.categories),\n"
        "           model.predict(np.array([[0.2], [2.8]])).tolist(), net(tensor).detach().numpy().round(6).tolist(),\n"
        "           info['names'], fn(4))",
        "%%step report --after use\nreport = repr(summary)",
    )
    expected = kernel.ns["summary"]
    result = run(kernel)
    assert result.status == "succeeded", result.state.error
    assert result.load("summary") == expected
    backends = {t.name: t.backend for t in result.plan.transfers()}
    assert {k: backends[k] for k in ("arr", "scalar", "frame", "model", "net", "tensor", "info", "fn")} == {
        "arr": "numpy", "scalar": "numpy", "frame": "pandas", "model": "sklearn", "net": "torch",
        "tensor": "torch-tensor", "info": "pickle", "fn": "dill"}
    made = {t.name for t in result.plan.transfers() if t.producer == "make"}
    saved = {name: json.loads((result.run_dir / "data" / "make" / name / "kale.json").read_text())["backend"]
             for name in made}
    assert saved == {name: backends[name] for name in made}  # the step saved with the planned backends
    loaded = result.load("frame", step="make")
    assert str(loaded.dtypes["t"]) == "datetime64[us, UTC]" or "UTC" in str(loaded.dtypes["t"])
    assert torch.equal(result.load("tensor"), torch.ones(2, 3))
