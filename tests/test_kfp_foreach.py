"""``--foreach`` on Kubeflow (issue 24, point 5): a loop's items task lists the item indices, the steps of the
clause run inside one ``dsl.ParallelFor`` (parallelism ``Kale.max_parallel``), each item loading the value
and taking its item (so every item type stays exact), and later steps receive ``dsl.Collected`` lists in item
order; run in real containers, every value equals the kernel's (the oracle)."""

import json

import pytest
import yaml

from kale_magic.engines.kfp.compiler import compile_pipeline
from kale_magic.engines.kfp.delivery import SPEC_LIMIT, container_specs
from kale_magic.errors import ValidationError

from oracle import run_cells, values_equal
from test_foreach import KFOLD, NESTED, PARAMETER


def compiled(kernel, cells, tmp_path, **settings):
    run_cells(kernel, cells)
    plan = kernel.magics.plan()
    path = compile_pipeline(plan, tmp_path / "p.yaml", **settings)
    return plan, next(yaml.safe_load_all(path.read_text()))


def component(spec, task):
    return spec["components"][task["componentRef"]["name"]]


def test_a_foreach_chain_compiles_to_one_parallel_for_and_later_steps_to_collected(kernel, tmp_path):
    plan, spec = compiled(kernel, KFOLD, tmp_path, max_parallel=3)
    root = spec["root"]["dag"]["tasks"]
    assert set(root) - {"kale-environment", "importer"} == {"split", "kale-items-train", "for-loop-1", "summary"}
    loop = root["for-loop-1"]
    assert loop["iteratorPolicy"] == {"parallelismLimit": 3}
    assert loop["parameterIterator"]["items"]["inputParameter"] == "pipelinechannel--kale-items-train-Output"
    inner = component(spec, loop)["dag"]["tasks"]
    assert set(inner) == {"train", "check"}  # the same clause continues inside the same loop
    assert inner["check"]["inputs"]["artifacts"]["in_model"]["taskOutputArtifact"]["producerTask"] == "train"
    for name in ("train", "check"):
        params = inner[name]["inputs"]["parameters"]
        assert params["kale_item"]["componentInputParameter"].startswith("pipelinechannel--kale-items-train")
    summary = root["summary"]["inputs"]["artifacts"]
    for name in ("in_score", "in_calibrated"):  # the items' values, as one list
        assert summary[name]["taskOutputArtifact"]["producerTask"] == "for-loop-1", name
    inputs = component(spec, root["summary"])["inputDefinitions"]["artifacts"]
    assert inputs["in_score"]["isArtifactList"] and inputs["in_calibrated"]["isArtifactList"]
    items = component(spec, root["kale-items-train"])
    # the environment's folder and the archives its step takes (numpy's: folds is an array)
    assert set(items["inputDefinitions"]["artifacts"]) == {"in_folds", "kale_environment", "kale_env_numpy"}
    assert items["outputDefinitions"]["parameters"]["Output"]["parameterType"] == "LIST"
    for label, text in container_specs(spec).items():  # the driver's command line holds every executor
        assert len(text) <= SPEC_LIMIT, label


def test_a_loop_over_a_parameter_lists_it_from_the_runs_value(kernel, tmp_path):
    plan, spec = compiled(kernel, PARAMETER, tmp_path)
    root = spec["root"]["dag"]["tasks"]
    items = root["kale-items-fit"]["inputs"]["parameters"]
    assert items["alphas"]["componentInputParameter"] == "alphas"  # the run's value, as literal text
    assert root["for-loop-1"]["iteratorPolicy"] == {"parallelismLimit": 8}  # Kale.max_parallel's default


def test_two_chains_with_the_same_item_name_are_two_loops(kernel, tmp_path):
    plan, spec = compiled(kernel, NESTED, tmp_path)
    root = spec["root"]["dag"]["tasks"]
    loops = [t for t in root if t.startswith("for-loop")]
    assert len(loops) == 1 and set(component(spec, root[loops[0]])["dag"]["tasks"]) == {"per", "again"}
    assert root["join"]["inputs"]["artifacts"]["in_scaled"]["taskOutputArtifact"]["producerTask"] == loops[0]


def test_a_step_that_a_loop_waits_for_and_that_reads_its_lists_is_refused_in_one_sentence(kernel, tmp_path):
    cells = ["%%parameters\nseeds = [0, 1, 2]",
             "%%step draw --foreach seed in seeds\nvalue = seed * 10",
             "%%step total\nsum_ = sum(value)",
             "%%step more --foreach seed in seeds --after total\nextra = value + sum_"]
    run_cells(kernel, cells)
    with pytest.raises(ValidationError) as refused:
        compile_pipeline(kernel.magics.plan(), tmp_path / "p.yaml")
    assert str(refused.value) == (
        "step 'total' reads the lists of the --foreach loop of step 'draw' (steps draw, more) and a step of that "
        "loop runs after it, which one Kubeflow ParallelFor cannot express: give the steps after 'total' another "
        "item name, starting a new loop.")


def iterations(root, task: str, name: str) -> list:
    """A loop step's output of the last run, one value per iteration, in iteration order."""
    from kale_magic import marshal

    runs = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "kale-"))]
    last = max(runs, key=lambda p: p.stat().st_mtime)
    found = {int(p.parent.parent.name.rsplit("-", 1)[1]): p for p in last.glob(f"for-loop-*-iteration-*/{task}/{name}")}
    return [marshal.load(found[i]) for i in range(len(found))]


@pytest.mark.slow
@pytest.mark.parametrize("cells, head, count", [
    ([c.replace("n_folds = 5", "n_folds = 3") for c in KFOLD], "train", 3),  # 3 folds: 8 containers
    (NESTED, "per", 3),  # a dict's keys as items, lists of lists fanned in
], ids=["k-fold", "dict-keys"])
def test_the_compiled_pipeline_saves_the_kernels_values_in_containers(kernel, docker_pipeline_root, tmp_path,
                                                                      cells, head, count):
    """kfp.local's orchestrator runs the ParallelFor and the Collected fan-in (the fan-in step's values prove
    the lists arrive in item order)."""
    from kfp import components
    from kale_magic import marshal
    from test_kfp_containers import compile_for_test, outputs

    after_step = run_cells(kernel, cells)
    plan = kernel.magics.plan()
    components.load_component_from_file(str(compile_for_test(plan, tmp_path / "pipeline.yaml")))()
    checked = 0
    for step in plan.steps.values():  # the oracle: every value the pipeline produced equals the kernel's
        for transfer in step.outputs:
            expected = after_step[step.name][transfer.name]
            if step.foreach:
                produced = iterations(docker_pipeline_root, step.name, transfer.name.lower())
            else:
                produced = marshal.load(outputs(docker_pipeline_root, step.name, transfer.name.lower()))
            assert values_equal(produced, expected), (transfer, produced, expected)
            checked += 1
    assert checked >= 4
    said = json.loads(outputs(docker_pipeline_root, f"kale-items-{head}", "executor_output.json").read_text())
    assert said["parameterValues"]["Output"] == list(range(count))


KFOLD_TASKS = {"split": "SUCCEEDED", "kale-items-train": "SUCCEEDED", "train": ["SUCCEEDED"] * 5,
               "check": ["SUCCEEDED"] * 5, "summary": "SUCCEEDED"}


def test_the_api_servers_view_of_a_loop_reports_each_step_once_all_its_items_ended(kernel, tmp_path):
    from kfp_api_server import FakeKfpServer
    from kfp_plans import follow

    run_cells(kernel, KFOLD)
    plan = kernel.magics.plan()
    seen = []
    with FakeKfpServer() as server:
        server.script_run(dict(state="RUNNING", tasks={**KFOLD_TASKS, "train": ["SUCCEEDED", "RUNNING"] * 2 + [
                              "PENDING"], "check": ["SUCCEEDED", "PENDING"], "summary": "PENDING"}),
                          dict(state="SUCCEEDED", tasks=KFOLD_TASKS))
        state = follow(server.url, tmp_path / "run", plan=plan, listen=lambda st, event: seen.append(
            (event, st.steps[event[5:]].status)) if event.startswith("step:") else None)
    assert state.status == "succeeded", state.error
    assert {n: s.status for n, s in state.steps.items()} == dict.fromkeys(plan.steps, "succeeded")
    assert ("step:train", "running") in seen and ("step:train", "succeeded") in seen
    assert "for-loop-1" in next(yaml.safe_load_all((tmp_path / "run/pipeline.yaml").read_text()))["root"]["dag"][
        "tasks"]


def test_a_value_a_loop_cannot_go_over_fails_the_run_with_the_items_tasks_sentence(kernel, tmp_path):
    from kfp_api_server import FakeKfpServer
    from kfp_plans import follow

    run_cells(kernel, KFOLD)
    plan = kernel.magics.plan()
    said = ("kale_magic.errors.KaleError: step 'train' loops over 'folds' (set), which --foreach cannot iterate; "
            "make it a list, tuple, range, dict, 1-D numpy array or pandas Series (e.g. list(...)).\n")
    with FakeKfpServer() as server:
        server.script_run(dict(state="FAILED", error="1 task failed", tasks={
            "split": "SUCCEEDED", "kale-items-train": ("FAILED", said)}))
        state = follow(server.url, tmp_path / "run", plan=plan)
    assert state.error.startswith("task 'kale-items-train' failed on Kubeflow Pipelines: ")
    assert "step 'train' loops over 'folds' (set), which --foreach cannot iterate" in state.error
    assert {n: s.status for n, s in state.steps.items()} == {
        "split": "succeeded", "train": "skipped", "check": "skipped", "summary": "skipped"}


@pytest.mark.parametrize("version, refused", [
    ("2.13.0", "--foreach (steps train, check) need KFP 2.14 or newer; upgrade KFP or run the notebook with "
               "--engine local."),
    ("2.14.0", None),
])
def test_a_server_before_2_14_is_refused_before_anything_is_uploaded(kernel, tmp_path, version, refused):
    from kfp_api_server import FakeKfpServer
    from kfp_plans import follow

    from kale_magic.errors import EngineError

    run_cells(kernel, KFOLD)
    plan = kernel.magics.plan()
    with FakeKfpServer(version=version) as server:
        if refused is None:
            server.script_run(dict(state="SUCCEEDED", tasks=KFOLD_TASKS))
            assert follow(server.url, tmp_path / "run", plan=plan).status == "succeeded"
            return
        with pytest.raises(EngineError) as info:
            follow(server.url, tmp_path / "run", plan=plan)
        assert not server.pipelines and not server.runs
        assert str(info.value).startswith(
            f"Kubeflow Pipelines {version} at {server.url} cannot run this pipeline: {refused}")


def test_the_kernels_max_parallel_is_the_loops_parallelism_on_kubeflow():
    from types import SimpleNamespace

    from kale_magic.engines.base import EngineContext
    from kale_magic.engines.kfp.kind import KfpType

    engine = KfpType().create(SimpleNamespace(host="http://127.0.0.1:9", no_cache=False), None,
                              settings={"install_packages": False}, context=EngineContext(max_parallel=3))
    assert engine.options.max_parallel == 3


TASK = "s3://b/root/p/run-1/train/"


def store_keys(items: dict[str, tuple[int, int] | None], outputs=("out_score",)) -> list[str]:
    """The keys a loop's items leave under their task folder: salt -> (item, count), None for no number."""
    keys = []
    for salt, number in items.items():
        for output in outputs:
            keys += [f"{TASK}{salt}/{output}/kale.json", f"{TASK}{salt}/{output}/data.pkl"]
            if number is not None:
                keys.append(f"{TASK}{salt}/{output}/kale-item-{number[0]}-of-{number[1]}")
        keys.append(f"{TASK}{salt}/kale_report")
    return sorted(keys)


def test_the_store_s_items_are_listed_in_item_order_whatever_their_salts():
    from kale_magic.engines.kfp.results import items_saved

    keys = store_keys({"f0": (2, 3), "a9": (0, 3), "c1": (1, 3)}, outputs=("out_score", "out_model"))
    found, looped = items_saved("train", TASK, keys, {"out_score": "score", "out_model": "model"})
    assert looped == {"count": 3}
    assert list(found) == ["train[0]", "train[1]", "train[2]"]
    assert found["train[0]"] == {"score": f"{TASK}a9/out_score", "model": f"{TASK}a9/out_model"}
    assert found["train[2]"]["score"] == f"{TASK}f0/out_score"
    assert items_saved("train", TASK, [], {"out_score": "score"}) == ({}, {"count": 0})  # nothing to loop over


@pytest.mark.parametrize("items, said", [
    ({"a": (0, 3), "b": (2, 3)}, "the object store holds 'score' of step 'train' for items 0, 2, not each of 0 to 2 "
                                 "once (an item failed, or KFP's cache served some items from another run): run the "
                                 "pipeline again with --no-cache to load the list"),
    ({"a": (0, 2), "b": (1, 2), "c": (1, 2)}, "the object store holds 'score' of step 'train' for items 0, 1 (2 times), "
                                              "not each of 0 to 1 once"),
    ({"a": (0, 2), "b": None}, "the items of step 'train' saved 'score' without their item numbers (a pipeline "
                               "compiled by an older kale-magic): compile and run the pipeline again to load them"),
], ids=["missing", "repeated", "unnumbered"])
def test_a_missing_or_repeated_item_in_the_store_is_refused_in_one_sentence_when_loaded(tmp_path, items, said):
    from kale_magic.engines.kfp.kind import KfpType
    from kale_magic.engines.kfp.results import items_saved
    from kale_magic.errors import KaleError
    from kale_magic.files import atomic_write_json
    from kale_magic.layout import RunDir

    found, looped = items_saved("train", TASK, store_keys(items), {"out_score": "score"})
    assert found == {} and looped["error"].startswith(said)
    run_dir = RunDir(tmp_path)
    atomic_write_json(run_dir.remote_items, {"train": looped})
    with pytest.raises(KaleError) as refused:
        KfpType().saved_items(run_dir, "train")
    assert str(refused.value) == looped["error"] + "."
