"""``kale-magic compile``: the KFP YAML from the cell sources alone, compared with the live kernel's."""

import pytest
import yaml

from cli_helpers import code, kale_magic, write

pytestmark = pytest.mark.slow  # kale-magic compile in a subprocess (kfp's compiler): seconds per test


def notebook(path, *extra):
    """A pipeline whose cells would fail if anything ran them: compile must only read them."""
    return write(path, code("%load_ext kale_magic"),
                 code("%%imports\nimport math"),
                 code("%%parameters\nn = 3\nscale = 1.5"),
                 code("%%step make --cpu 2 --memory 1Gi\nxs = [math.sqrt(i) for i in range(n)]\n"
                      "open('/no/such/file')"),
                 code("%%step double\nys = [x * scale for x in xs]"),
                 code("%%step total --after make,double\nexec('z = 1')\ntotal = sum(xs) + sum(ys)"),
                 code("%%metrics\ntotal"), *extra)


def dag(spec):
    """task -> (sorted upstream tasks, sorted input artifact names, sorted parameter names); the imports of
    kale-magic's runtime bundle and of the workspace snapshot are left out (test_compiler and
    test_snapshot_kfp check them)."""
    tasks = spec["root"]["dag"]["tasks"]
    imports = {name for name in tasks if name.startswith("importer")} | {"kale_runtime", "kale_snapshot"}
    return {name: (sorted(set(task.get("dependentTasks", [])) - imports),
                   sorted(set(task.get("inputs", {}).get("artifacts", {})) - imports),
                   sorted(task.get("inputs", {}).get("parameters", {})))
            for name, task in tasks.items() if name not in imports}


def test_compile_writes_the_pipeline_without_running_any_cell(tmp_path):
    notebook(tmp_path / "nb.ipynb")
    result = kale_magic("compile", "nb.ipynb", "-o", "out/pipe.yaml", "--param", "n=7", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"wrote out/pipe.yaml (3 steps)\n"
    spec = next(yaml.safe_load_all((tmp_path / "out" / "pipe.yaml").read_text()))
    assert spec["pipelineInfo"]["name"] == "nb"
    assert spec["root"]["inputDefinitions"]["parameters"]["n"]["defaultValue"] == 7
    assert dag(spec) == {
        "kale-environment": ([], [], []),
        "make": (["kale-environment"], ["kale_environment"], ["n"]),
        "double": (["kale-environment", "make"], ["in_xs", "kale_environment"], ["scale"]),
        "total": (["double", "kale-environment", "make"], ["in_xs", "in_ys", "kale_environment"], []),
    }
    resources = spec["deploymentSpec"]["executors"]["exec-make"]["container"]["resources"]
    assert resources["cpuLimit"] == 2 and resources["memoryLimit"] == 1.073741824


def test_compile_warns_in_one_line_about_the_values_it_cannot_type(tmp_path):
    notebook(tmp_path / "nb.ipynb")
    result = kale_magic("compile", "nb.ipynb", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    warnings = result.stderr.splitlines()
    assert [w for w in warnings if "unknown" in w] == [
        "kale-magic: warning: 2 values flow between steps ('xs', 'ys') with types unknown without running the "
        "notebook: each one's format is chosen from the value when its step saves it, and its KFP artifact "
        "type is Artifact."]
    assert any("the %%step total cell uses exec()" in w for w in warnings)
    assert (tmp_path / ".kale" / "pipelines" / "nb.yaml").is_file()


def test_the_notebooks_kale_run_and_config_lines_are_honoured(tmp_path):
    notebook(tmp_path / "nb.ipynb", code("%config Kale.base_image = 'registry.example/steps:1'\n"
                                         "run = %kale_run --pipeline digits --param scale=2.5"))
    result = kale_magic("compile", "nb.ipynb", "-o", "p.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    spec = next(yaml.safe_load_all((tmp_path / "p.yaml").read_text()))
    assert spec["pipelineInfo"]["name"] == "digits"
    assert spec["root"]["inputDefinitions"]["parameters"]["scale"]["defaultValue"] == 2.5
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values() if "container" in e}
    assert images == {"registry.example/steps:1"}


def test_static_and_live_compiles_make_the_same_graph(tmp_path):
    """The oracle: ``%kale_run --compile-only`` in a live kernel sees the same steps, edges and inputs."""
    write(tmp_path / "nb.ipynb", code("%load_ext kale_magic"),
          code("%%parameters\nn = 4"),
          code("%%step make\nxs = list(range(n))\nlabels = {i: str(i) for i in xs}"),
          code("%%step left\nleft = [x * 2 for x in xs]"),
          code("%%step right --after make\nright = [labels[x] for x in xs]"),
          code("%%step join --after left,right\npairs = list(zip(left, right))\ncount = len(pairs)"),
          code("%%metrics\ncount"))
    live = kale_magic("run", "nb.ipynb", "--engine", "kfp", "--compile-only", cwd=tmp_path)
    assert live.returncode == 0, live.stdout + live.stderr
    static = kale_magic("compile", "nb.ipynb", "-o", "static.yaml", cwd=tmp_path)
    assert static.returncode == 0, static.stderr
    live_spec = next(yaml.safe_load_all((tmp_path / ".kale" / "pipelines" / "nb.yaml").read_text()))
    static_spec = next(yaml.safe_load_all((tmp_path / "static.yaml").read_text()))
    assert dag(static_spec) == dag(live_spec)
    assert dag(static_spec)["join"] == (["kale-environment", "left", "right"], ["in_left", "in_right", "kale_environment"], [])


def test_a_kale_tagged_notebook_compiles_directly(tmp_path):
    write(tmp_path / "kale.ipynb",
          code("n = 2", "pipeline-parameters"),
          code("xs = list(range(n))", "step:load", "limit:nvidia.com/gpu:1"),
          code("total = sum(xs)", "step:sum", "prev:load", "team:data"),
          code("print(total)", "pipeline-metrics"),
          kubeflow_notebook={"pipeline_name": "from-kale", "docker_image": "kale/image:2"})
    result = kale_magic("compile", "kale.ipynb", "-o", "p.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "cell 3: tag 'team:data' has no kale-magic equivalent" in result.stderr
    spec = next(yaml.safe_load_all((tmp_path / "p.yaml").read_text()))
    assert spec["pipelineInfo"]["name"] == "from-kale"
    assert dag(spec) == {"kale-environment": ([], [], []), "load": (["kale-environment"], ["kale_environment"], ["n"]),
                         "sum": (["kale-environment", "load"], ["in_xs", "kale_environment"], [])}
    executors = spec["deploymentSpec"]["executors"]
    assert executors["exec-load"]["container"]["image"] == "kale/image:2"
    assert executors["exec-load"]["container"]["resources"]["accelerator"]["resourceCount"] == "1"


def test_an_annotation_mistake_is_one_line(tmp_path):
    write(tmp_path / "nb.ipynb", code("%%step a\nx = 1"), code("%%step b --after nowhere\ny = x"))
    result = kale_magic("compile", "nb.ipynb", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "no step of that name" in result.stderr
