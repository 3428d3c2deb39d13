"""``--if`` on Kubeflow: compiled to a gate task and a ``dsl.If`` block, run in real containers.

The gate evaluates the condition in Python on the values it reads (KFP conditions compare one output with
a constant), so the pipeline takes the branch the kernel took; every value it produces equals the kernel's
in both branches (the oracle).
"""

import json

import pytest
import yaml

from kale_magic import marshal
from kale_magic.engines.kfp.compiler import compile_pipeline, condition_gates
from kale_magic.errors import ValidationError

from test_conditions import GATED  # the gated-deploy notebook the local tests run


def record(kernel, threshold):
    for cell in GATED:
        kernel.run(cell.replace("THRESHOLD", repr(threshold)))
    return kernel.magics.plan()


def test_the_step_and_its_descendants_sit_in_one_if_block_after_a_gate(kernel, tmp_path):
    plan = record(kernel, 0.5)
    spec = next(yaml.safe_load_all(compile_pipeline(plan, tmp_path / "p.yaml").read_text()))
    root = spec["root"]["dag"]["tasks"]
    assert set(root) - {"kale-environment", "importer"} == {
        "train", "summary", "report", "kale-gate-deploy", "condition-1"}
    gate = root["kale-gate-deploy"]
    assert set(gate["inputs"]["parameters"]) == {"threshold"}
    assert set(gate["inputs"]["artifacts"]) == {"in_accuracy", "kale_environment"}  # its values, its environment
    executor = spec["deploymentSpec"]["executors"][spec["components"][gate["componentRef"]["name"]]["executorLabel"]]
    # a few values loaded: no cpu request, only the memory its environment's volume takes (test_kfp_footprint)
    assert set(executor["container"]["resources"]) == {"memoryRequest", "resourceMemoryRequest"}
    block = root["condition-1"]
    assert block["triggerPolicy"]["condition"] == (
        "inputs.parameter_values['pipelinechannel--kale-gate-deploy-Output'] == 'true'")
    inner = spec["components"][block["componentRef"]["name"]]["dag"]["tasks"]
    assert set(inner) == {"deploy", "notify"}


def test_unrelated_conditions_above_one_step_are_refused_in_one_sentence(kernel):
    kernel.cells("%%parameters\nlimit = 1",
                 "%%step a\nx = 1",
                 '%%step b --after a --if "x > limit"\ny = 2',
                 '%%step c --after a --if "x < limit"\nz = 3',
                 "%%step d --after b,c\nw = 4")
    with pytest.raises(ValidationError) as refused:
        condition_gates(kernel.magics.plan())
    assert str(refused.value) == (
        "step 'd' runs after the --if steps 'b' and 'c', neither of which runs after the other, which Kubeflow's "
        "nested conditions cannot express: add --after b to the %%step c line, or test both conditions in one --if.")


@pytest.mark.slow
@pytest.mark.parametrize("threshold", [0.5, 0.9])
def test_the_compiled_pipeline_takes_the_kernels_branch_in_containers(kernel, threshold, docker_pipeline_root,
                                                                       tmp_path):
    from kfp import components
    from test_kfp_containers import compile_for_test, outputs

    plan = record(kernel, threshold)
    components.load_component_from_file(str(compile_for_test(plan, tmp_path / "pipeline.yaml")))()
    ran = threshold < 0.87
    for step in plan.steps.values():  # the oracle: every value the pipeline produced equals the kernel's
        for transfer in step.outputs:
            produced = outputs(docker_pipeline_root, step.name, transfer.name.lower())
            if step.name in ("deploy", "notify") and not ran:
                assert not produced.exists(), transfer
                continue
            assert json.dumps(marshal.load(produced)) == json.dumps(kernel.ns[transfer.name]), transfer
    said = json.loads(outputs(docker_pipeline_root, "kale-gate-deploy", "executor_output.json").read_text())
    assert said["parameterValues"]["Output"] == ("true" if ran else "condition accuracy > threshold was false: "
                                                                     "accuracy = 0.87, threshold = 0.9")


def test_a_successful_kfp_run_reports_the_steps_its_gate_held_back_as_skipped(kernel, tmp_path):
    from kfp_api_server import FakeKfpServer
    from kfp_plans import follow

    plan = record(kernel, 0.5)
    with FakeKfpServer() as server:
        server.script_run(dict(state="SUCCEEDED", tasks={"train": "SUCCEEDED", "summary": "SUCCEEDED",
                                                        "kale-gate-deploy": "SUCCEEDED", "report": "SUCCEEDED"}))
        state = follow(server.url, tmp_path / "follow", plan=plan)
    assert state.status == "succeeded"
    why = ("skipped: the condition accuracy > threshold of step 'deploy' was false (the kale-gate task's output "
           "says why)")
    assert {n: (s.status, s.message) for n, s in state.steps.items() if s.status == "skipped"} == {
        "deploy": ("skipped", why), "notify": ("skipped", why)}
    assert state.steps["report"].status == "succeeded"


@pytest.mark.slow  # kale-magic compile in a subprocess
def test_kale_magic_compile_reads_the_condition_from_the_file(tmp_path):
    from cli_helpers import code, kale_magic, write

    write(tmp_path / "nb.ipynb", code("%load_ext kale_magic"), code("%%parameters\nthreshold = 0.9"),
          code("%%step summary\naccuracy = 0.87"),
          code('%%step deploy --if "accuracy > threshold"\npath = "m.pkl"'),
          code('%%step bad --if "check(accuracy)"\nz = 1'))
    refused = kale_magic("compile", "nb.ipynb", cwd=tmp_path)
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1
    assert 'it calls check(), but a condition may call only len, abs, min, max, any, all, round' in refused.stderr
    write(tmp_path / "nb.ipynb", code("%load_ext kale_magic"), code("%%parameters\nthreshold = 0.9"),
          code("%%step summary\naccuracy = 0.87"),
          code('%%step deploy --if "accuracy > threshold"\npath = "m.pkl"'))
    result = kale_magic("compile", "nb.ipynb", "-o", "p.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    tasks = next(yaml.safe_load_all((tmp_path / "p.yaml").read_text()))["root"]["dag"]["tasks"]
    assert tasks["condition-1"]["triggerPolicy"]["condition"].endswith("kale-gate-deploy-Output'] == 'true'")
