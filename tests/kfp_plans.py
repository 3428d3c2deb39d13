"""Hand-built plans shared by the KFP compiler and engine tests, and following a run on a KFP server."""

import dataclasses

from kale_magic.engines.kfp.engine import KfpEngine
from kale_magic.layout import RunDir
from kale_magic.plan.model import Plan, StepPlan, Transfer
from kale_magic.plan.session import StepOptions
from kale_magic.run import launch
from kale_magic.run.state import RunState


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



def follow(host, tmp_path, parameters=None, plan=None, upload_only=False, cancel_after=None, run_id="run-1",
           poll_interval=0.01, listen=None, **engine_args):
    """What ``launch`` does with an engine after Validate: its Compile, Upload and Run tasks.

    The steps' image holds kale-magic (``install_packages`` False) unless the config says otherwise: the
    runtime bundle would need an object store, which these API tests do not run (test_kfp_delivery does).
    """
    engine_args["config"] = {"install_packages": False, **engine_args.get("config", {})}
    plan = plan or three_step_plan()
    plan = dataclasses.replace(plan, parameters={**plan.parameters, **(parameters or {})})
    state = RunState(run_id, plan.pipeline, plan.experiment, "kfp", list(plan.steps), parameters)
    engine = KfpEngine(host, poll_interval=poll_interval, pipeline_file=tmp_path / "pipeline.yaml", **engine_args)
    if listen:
        state.subscribe(listen)
    if cancel_after:
        state.subscribe(lambda st, event: engine.cancel() if event == cancel_after else None)
    run_dir = RunDir(tmp_path / "run")
    compiled = launch.compile_steps(plan, state, run_dir, engine)
    launch.upload(plan, state, engine, compiled)
    if not upload_only:
        launch.execute(plan, state, run_dir, engine, compiled).join()
    return state
