"""scikit-learn and PyTorch round trips: a loaded model predicts exactly as the saved one."""

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from kale_magic import marshal

ROOT = Path(__file__).resolve().parents[1]


def roundtrip(obj, tmp_path, name="v"):
    record = marshal.save(obj, tmp_path / name, name=name)
    return record, marshal.load(tmp_path / name, name=name, step="train")


def run_saver(script, target):
    """Save from a fresh interpreter whose __main__ defines the classes (as a notebook does)."""
    header = f"import sys; sys.path.insert(0, {str(ROOT)!r})\nfrom kale_magic import marshal\n"
    out = subprocess.run([sys.executable, "-c", header + textwrap.dedent(script), str(target)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


# --- scikit-learn ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def iris():
    datasets = pytest.importorskip("sklearn.datasets")
    return datasets.load_iris(return_X_y=True)


def fitted_models(X, y):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return {
        "logistic": LogisticRegression(max_iter=500).fit(X, y),
        "forest": RandomForestClassifier(n_estimators=20, random_state=0).fit(X, y),
        "pipeline": make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, y),
    }


@pytest.mark.parametrize("kind", ["logistic", "forest", "pipeline"])
def test_fitted_estimators_predict_identically(tmp_path, iris, kind):
    X, y = iris
    model = fitted_models(X, y)[kind]
    record, out = roundtrip(model, tmp_path)
    assert record["backend"] == "sklearn" and record["artifact_type"] == "Model"
    assert list(record["files"]) == ["model.joblib"]
    assert type(out) is type(model)
    np.testing.assert_array_equal(out.predict_proba(X), model.predict_proba(X))
    assert out.get_params().keys() == model.get_params().keys()


def test_unfitted_estimator_and_describe(tmp_path):
    from sklearn.svm import SVC

    assert marshal.describe(SVC()) == ("sklearn", "sklearn.svm._classes.SVC", "Model", None)
    _, out = roundtrip(SVC(C=3.0), tmp_path)
    assert out.C == 3.0


@pytest.mark.slow  # scikit-learn imported in a fresh interpreter
def test_pipeline_with_notebook_defined_transformer_travels_by_value(tmp_path, iris):
    X, _ = iris
    files = run_saver("""
        import numpy as np
        from sklearn.base import BaseEstimator, TransformerMixin
        from sklearn.datasets import load_iris
        from sklearn.linear_model import LinearRegression
        from sklearn.pipeline import make_pipeline
        class Square(BaseEstimator, TransformerMixin):
            def fit(self, X, y=None): return self
            def transform(self, X): return np.asarray(X) ** 2
        X, y = load_iris(return_X_y=True)
        model = make_pipeline(Square(), LinearRegression()).fit(X, y)
        np.save(sys.argv[1] + ".expected.npy", model.predict(X))
        print(list(marshal.save(model, sys.argv[1])["files"]))
    """, tmp_path / "m")
    assert files == "['model.dill']"
    model = marshal.load(tmp_path / "m")
    np.testing.assert_array_equal(model.predict(X), np.load(tmp_path / "m.expected.npy"))


# --- PyTorch --------------------------------------------------------------------------------------

@pytest.fixture
def torch():
    return pytest.importorskip("torch")


slow_torch = pytest.mark.slow  # torch: a heavy ML framework (tests/conftest.py)


@slow_torch
def test_tensors_round_trip_with_dtype_shape_and_grad_flag(tmp_path, torch):
    values = [torch.randn(3, 4, dtype=torch.float64), torch.arange(10, dtype=torch.int8)[::3],
              torch.zeros(0, 5), torch.tensor(True), torch.randn(2, 2).to(torch.bfloat16),
              torch.nn.Parameter(torch.ones(3)), torch.randn(4, 4).t()]
    for i, tensor in enumerate(values):
        record, out = roundtrip(tensor, tmp_path, name=f"t{i}")
        assert record["backend"] == "torch-tensor" and record["artifact_type"] == "Dataset"
        assert type(out) is type(tensor) and out.dtype == tensor.dtype and out.shape == tensor.shape
        assert out.requires_grad == tensor.requires_grad and out.stride() == tensor.stride()
        assert torch.equal(out, tensor)


@slow_torch
def test_module_optimizer_scheduler_and_state_dict(tmp_path, torch):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2)
    x = torch.randn(16, 4)
    net(x).pow(2).sum().backward()
    optimizer.step()
    scheduler.step()

    record, loaded_net = roundtrip(net, tmp_path, "net")
    assert record["backend"] == "torch" and record["artifact_type"] == "Model"
    assert torch.equal(loaded_net(x), net(x))

    _, loaded_opt = roundtrip(optimizer, tmp_path, "opt")
    assert type(loaded_opt) is torch.optim.Adam
    saved_state, loaded_state = optimizer.state_dict(), loaded_opt.state_dict()
    assert saved_state["param_groups"] == loaded_state["param_groups"]
    for key, state in saved_state["state"].items():
        for name, tensor in state.items():
            assert torch.equal(loaded_state["state"][key][name], tensor)

    _, loaded_sched = roundtrip(scheduler, tmp_path, "sched")
    assert loaded_sched.state_dict() == scheduler.state_dict()

    record, state = roundtrip(net.state_dict(), tmp_path, "state")
    assert record["backend"] == "torch"
    assert list(state) == list(net.state_dict())
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())


@slow_torch
def test_module_defined_in_the_notebook_gives_identical_outputs(tmp_path, torch):
    files = run_saver("""
        import torch
        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.layer = torch.nn.Linear(3, 2)
            def forward(self, x):
                return torch.tanh(self.layer(x)) * 2
        torch.manual_seed(1)
        net = Net()
        x = torch.randn(5, 3)
        torch.save({"x": x, "y": net(x).detach()}, sys.argv[1] + ".expected.pt")
        print(list(marshal.save(net, sys.argv[1])["files"]))
    """, tmp_path / "net")
    assert files == "['value.dill.pt']"
    net = marshal.load(tmp_path / "net")  # no Net class in this process
    expected = torch.load(tmp_path / "net.expected.pt")
    assert type(net).__name__ == "Net"
    assert torch.equal(net(expected["x"]).detach(), expected["y"])


@slow_torch
def test_cuda_tensors_load_on_cpu_without_a_gpu(tmp_path, torch, monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    original = torch.serialization.location_tag
    monkeypatch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
    marshal.save(torch.arange(4.0), tmp_path / "v")
    monkeypatch.setattr(torch.serialization, "location_tag", original)
    with pytest.raises(RuntimeError, match="CUDA"):  # what plain torch.load does with this file
        torch.load(tmp_path / "v" / "value.pt", weights_only=False)
    out = marshal.load(tmp_path / "v")
    assert out.device.type == "cpu" and torch.equal(out, torch.arange(4.0))


@slow_torch
def test_describe_tensor_is_size_only(torch):
    assert marshal.describe(torch.zeros(100, 10, dtype=torch.float16)) == \
        ("torch-tensor", "torch.Tensor", "Dataset", 2000)


# --- XGBoost / LightGBM (optional) ------------------------------------------------------------------

@pytest.fixture(scope="module")
def binary_data():
    rng = np.random.default_rng(0)
    X = rng.random((300, 5))
    return X, (X[:, 0] + rng.random(300) > 1).astype(int)


def test_xgboost_booster_native_format(tmp_path, binary_data):
    xgb = pytest.importorskip("xgboost")
    X, y = binary_data
    names = list("abcde")
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 3},
                        xgb.DMatrix(X, label=y, feature_names=names), num_boost_round=15)
    booster.set_attr(note="trained in step train")
    record, out = roundtrip(booster, tmp_path)
    assert (record["backend"], record["artifact_type"], list(record["files"])) == ("xgboost", "Model", ["model.ubj"])
    assert type(out) is xgb.Booster
    assert out.feature_names == names and out.attr("note") == "trained in step train"
    dmatrix = xgb.DMatrix(X, feature_names=names)
    np.testing.assert_array_equal(out.predict(dmatrix), booster.predict(dmatrix))


def test_lightgbm_booster_native_format(tmp_path, binary_data):
    lgb = pytest.importorskip("lightgbm")
    X, y = binary_data
    booster = lgb.train({"objective": "binary", "verbose": -1, "num_leaves": 7}, lgb.Dataset(X, label=y),
                        num_boost_round=15)
    record, out = roundtrip(booster, tmp_path)
    assert (record["backend"], record["artifact_type"], list(record["files"])) == ("lightgbm", "Model", ["model.txt"])
    assert type(out) is lgb.Booster
    np.testing.assert_array_equal(out.predict(X), booster.predict(X))


@pytest.mark.parametrize("library, estimator", [("xgboost", "XGBRegressor"), ("lightgbm", "LGBMRegressor")])
def test_boosting_sklearn_wrappers_use_the_sklearn_backend(tmp_path, binary_data, library, estimator):
    module = pytest.importorskip(library)
    X, y = binary_data
    model = getattr(module, estimator)(n_estimators=10, **({"verbose": -1} if library == "lightgbm" else {}))
    model.fit(X, y)
    record, out = roundtrip(model, tmp_path)
    assert record["backend"] == "sklearn"
    np.testing.assert_array_equal(out.predict(X), model.predict(X))
