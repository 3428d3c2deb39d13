"""``kale-magic run`` end to end: a real subprocess, a real kernel, the local engine."""

import json
import shutil

import nbformat
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell

from cli_helpers import ROOT, code, kale_magic, kernel_env, write

DEMOS = ROOT / "demo_notebooks"


def run_metrics(workdir):
    """Metrics of the one run made in ``workdir``, as the local engine saved them."""
    (run_dir,) = (workdir / ".kale" / "runs").iterdir()
    metrics = {}
    for path in sorted((run_dir / "steps").glob("*.metrics.json")):
        metrics.update(json.loads(path.read_text()))
    return metrics


def annotated(path, *extra):
    return write(path, code("%load_ext kale_magic"),
                 code("%%parameters\nn = 3"),
                 code("%%step make\nxs = list(range(n))"),
                 code("%%step total\ntotal = sum(xs)\nprint('total is', total)"),
                 code("%%metrics\ntotal"), *extra)


def test_run_executes_the_notebook_and_runs_its_pipeline(tmp_path):
    annotated(tmp_path / "nb.ipynb")
    result = kale_magic("run", "nb.ipynb", "--param", "n=5", "--output", "done.ipynb", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "make succeeded" in result.stdout and "total succeeded" in result.stdout
    assert run_metrics(tmp_path) == {"total": 10}
    done = nbformat.read(str(tmp_path / "done.ipynb"), as_version=4)
    assert done.cells[-1].source == "run = %kale_run --param n=5"
    assert [c.source for c in done.cells[:-1]] == \
        [c.source for c in nbformat.read(str(tmp_path / "nb.ipynb"), as_version=4).cells]
    stream = "".join(o.get("text", "") for o in done.cells[3].outputs)
    assert stream == "total is 3\n"  # the notebook's own run, with the default n
    assert not any("__kale_magic_runs__" in o.get("text", "") for c in done.cells for o in c.outputs)


def test_command_line_options_are_added_to_the_notebooks_kale_run(tmp_path):
    annotated(tmp_path / "nb.ipynb", code("run = %kale_run --pipeline mine --experiment nb"),
              code("print('after the run:', run.status, run.plan.experiment, run.plan.description)"))
    result = kale_magic("run", "nb.ipynb", "--experiment", "cli", "--compile-only", "--no-cache",
                        "--no-snapshot", "--description", "it's $HOME {x}", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "after the run: compiled cli it's $HOME {x}" in result.stdout
    (run_dir,) = (tmp_path / ".kale" / "runs").iterdir()
    assert sorted(p.name for p in (run_dir / "notebooks").iterdir()) == ["make.ipynb", "total.ipynb"]
    assert not (run_dir / "executed").exists() or not any((run_dir / "executed").iterdir())


def test_a_failed_step_fails_the_command(tmp_path):
    write(tmp_path / "nb.ipynb", code("%load_ext kale_magic"),
          code("%%step make\nxs = [1, 2]"),
          code("%%step boom\nif len(xs) == 2 and '__session__' not in globals():\n"
               "    raise RuntimeError('only in the pipeline')\ny = 1"))
    result = kale_magic("run", "nb.ipynb", cwd=tmp_path)
    assert result.returncode == 1
    assert "boom failed" in result.stdout
    assert result.stderr.startswith("kale-magic: nb.ipynb: run ") and "failed" in result.stderr
    assert "RuntimeError: only in the pipeline" in result.stderr


def test_an_annotation_mistake_is_one_line_naming_the_cell(tmp_path):
    write(tmp_path / "nb.ipynb", code("%load_ext kale_magic"),
          code("%%step make\nxs = [1]"), code("%%step use --after nowhere\ny = xs"))
    result = kale_magic("run", "nb.ipynb", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert "cell 4 (run = %kale_run) raised ValidationError" in result.stderr
    assert "no step of that name" in result.stderr


def kale_tagged(path):
    """Every Kale tag that changes the pipeline, on a small computation with two parameters."""
    return write(
        path,
        code("print('exploring')"),
        code("import math", "imports"),
        code("import statistics"),
        code("def scale(values, factor):\n    return [v * factor for v in values]", "functions"),
        code("n = 6\nfactor = 2.5", "pipeline-parameters"),
        code("xs = list(range(1, n + 1))", "step:load", "limit:cpu:1", "cache:disabled"),
        code("xs.append(n * 10)"),
        code("print(xs)", "skip"),
        code("ys = scale(xs, factor)", "block:prep", "prev:load", "limit:memory:1Gi", "notes"),
        code("mean = statistics.mean(ys)\nspread = math.sqrt(statistics.pvariance(ys))",
             "step:stats", "prev:prep", "image:python:3.11"),
        code("count = len(xs)", "step:count", "prev:load"),
        code("print(mean)\nprint(spread)\nprint(count)", "pipeline-metrics"),
        kubeflow_notebook={"experiment_name": "kale-exp", "pipeline_name": "tagged",
                           "docker_image": "python:3.11-slim"},
    )


def oracle_metrics(path, names, parameters=""):
    """The metrics' values when the notebook's cells run top to bottom in one plain kernel."""
    nb = nbformat.read(str(path), as_version=4)
    if parameters:
        nb.cells.insert(next(i for i, c in enumerate(nb.cells)
                             if "pipeline-parameters" in c.metadata.get("tags", [])) + 1,
                        new_code_cell(parameters))
    nb.cells = [c for c in nb.cells if "pipeline-metrics" not in c.metadata.get("tags", [])]
    nb.cells.append(new_code_cell(f"import json; print(json.dumps({{k: globals()[k] for k in {names!r}}}))"))
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute(env=kernel_env())
    return json.loads(nb.cells[-1].outputs[0].text)


def test_a_kale_tagged_notebook_runs_directly_with_the_metrics_of_its_cells(tmp_path):
    source = kale_tagged(tmp_path / "kale.ipynb")
    result = kale_magic("run", "kale.ipynb", "--param", "n=4", "--output", "done.ipynb", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "cell 9: tag 'notes' has no kale-magic equivalent" in result.stderr
    expected = oracle_metrics(source, ["mean", "spread", "count"], parameters="n = 4")
    assert run_metrics(tmp_path) == expected
    assert expected["count"] == 5
    done = nbformat.read(str(tmp_path / "done.ipynb"), as_version=4)
    assert done.cells[-1].source == (
        "%config Kale.base_image = 'python:3.11-slim'\n"
        "run = %kale_run --experiment kale-exp --pipeline tagged --param n=4")


def test_convert_then_run_gives_the_same_metrics(tmp_path):
    source = kale_tagged(tmp_path / "kale.ipynb")
    assert kale_magic("convert", "kale.ipynb", "-o", "magic.ipynb", cwd=tmp_path).returncode == 0
    result = kale_magic("run", "magic.ipynb", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert run_metrics(tmp_path) == oracle_metrics(source, ["mean", "spread", "count"])


def test_the_kale_tagged_demo_runs_from_the_command_line(tmp_path):
    demo = tmp_path / "kale_tagged.ipynb"
    shutil.copy(DEMOS / "kale_tagged.ipynb", demo)
    result = kale_magic("run", demo, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "evaluate succeeded" in result.stdout
    assert run_metrics(tmp_path) == oracle_metrics(demo, ["accuracy", "depth"])


def test_the_extension_and_the_run_are_added_when_the_notebook_lacks_them(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Title"),
                                         code("%%step only\nanswer = 6 * 7"), code("%%metrics\nanswer")])
    nbformat.write(nb, str(tmp_path / "nb.ipynb"))
    result = kale_magic("run", "nb.ipynb", "--output", "done.ipynb", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    done = nbformat.read(str(tmp_path / "done.ipynb"), as_version=4)
    assert [c.source.split("\n")[0] for c in done.cells] == [
        "# Title", "%load_ext kale_magic", "%%step only", "%%metrics", "run = %kale_run"]
    assert run_metrics(tmp_path) == {"answer": 42}


def test_a_notebook_without_annotations_says_what_to_add(tmp_path):
    write(tmp_path / "nb.ipynb", code("x = 1"))
    result = kale_magic("run", "nb.ipynb", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "no %%step cells were recorded" in result.stderr
