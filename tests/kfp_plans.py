"""Hand-built plans shared by the KFP compiler and engine tests."""

from kale_magic.plan.model import Plan, StepPlan, Transfer
from kale_magic.plan.session import StepOptions


def three_step_plan(**overrides) -> Plan:
    """load -> train -> report: a Dataset and a Model flow, typed and JSON parameters, a metric."""
    x = Transfer("X", "load", "numpy", "numpy.ndarray", "Dataset")
    model = Transfer("model", "train", "dill", "builtins.dict", "Model")
    steps = {
        "load": StepPlan("load", ("import numpy as np\nX = np.arange(n) * scale",), (), ("n", "scale"),
                         (), (x,), ()),
        "train": StepPlan("train", ("model = {'total': int(X.sum()), 'cfg': cfg, 'n': n}\nacc = 0.75",),
                          ("load",), ("cfg", "n"), (x,), (model,), ("acc",),
                          StepOptions(cpu="500m", memory="1Gi", gpu=1, retries=2, timeout=600, no_cache=True)),
        "report": StepPlan("report", ("print('total', model['total'], flag)",), ("train",), ("flag",),
                           (model,), (), (), StepOptions(image="registry.example/kale:1")),
    }
    fields = dict(pipeline="Demo Pipeline", steps=steps,
                  parameters={"n": 4, "scale": 1.5, "cfg": {"layers": [3, 2], "name": "m"}, "flag": True},
                  metrics=("acc",), experiment="exp-a", description="A demo pipeline")
    fields.update(overrides)
    return Plan(**fields)

