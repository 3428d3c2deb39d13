"""``kale-magic run`` end to end: a real subprocess, a real kernel, the local engine."""

import json
import re
import shutil

import nbformat
import pytest
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell

from cli_helpers import ROOT, code, kale_magic, kernel_env, own_stderr, printed, write

DEMOS = ROOT / "demo_notebooks"
pytestmark = pytest.mark.slow  # kale-magic in a subprocess, running pipelines (and with --execute-notebook a Jupyter kernel)


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


def test_run_plans_from_the_sources_and_computes_each_step_once(tmp_path):
    log = tmp_path.parent / f"{tmp_path.name}-executions.log"  # a side channel outside the workspace
    mark = f"open({str(log)!r}, 'a').write('{{}}\\n')"
    write(tmp_path / "nb.ipynb", code("%load_ext kale_magic"),
          code("%%imports\nimport numpy as np"),
          code("%%parameters\nn = 3"),
          code("%%step make\n" + mark.format("make") + "\nxs = np.arange(n)"),
          code("%%step total\n" + mark.format("total") + "\ntotal = int(xs.sum())\nprint('total is', total)"),
          code("%%metrics\ntotal"),
          code(mark.format("plain cell") + "\nTrue"),
          code("run = %kale_run --experiment cli"))
    result = kale_magic("run", "nb.ipynb", "--param", "n=5", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert log.read_text().split() == ["make", "total"]  # no cell ran in a kernel: each step ran once
    assert run_metrics(tmp_path) == {"total": 10}
    (run_dir,) = (tmp_path / ".kale" / "runs").iterdir()
    record = json.loads((run_dir / "data" / "make" / "xs" / "kale.json").read_text())
    assert record["backend"] == "numpy"  # chosen from the live array by the step that saved it
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Kale run ") and "experiment cli" in lines[0]
    assert any("make succeeded" in line for line in lines) and any("total succeeded" in line for line in lines)
    assert "True" not in lines and not any("total is" in line for line in lines)  # progress, not cell outputs


def test_execute_notebook_runs_every_cell_first_and_output_saves_it(tmp_path):
    annotated(tmp_path / "nb.ipynb", code("run = %kale_run"), code("print('after the run:', run.status)"))
    result = kale_magic("run", "nb.ipynb", "--param", "n=5", "--execute-notebook", "--output", "done.ipynb",
                        cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "make succeeded" in result.stdout and "total succeeded" in result.stdout
    assert run_metrics(tmp_path) == {"total": 10}
    assert "[cell 4] total is 3" in result.stdout.splitlines()  # other cells' outputs are labelled
    assert "[cell 7] after the run: succeeded" in result.stdout.splitlines()
    done = nbformat.read(str(tmp_path / "done.ipynb"), as_version=4)
    assert done.cells[-2].source == "run = %kale_run --param n=5"
    assert [c.source for c in done.cells[:-2]] == \
        [c.source for c in nbformat.read(str(tmp_path / "nb.ipynb"), as_version=4).cells[:-2]]
    stream = "".join(o.get("text", "") for o in done.cells[3].outputs)
    assert stream == "total is 3\n"  # the notebook's own run, with the default n
    assert not any("__kale_magic_runs__" in o.get("text", "") for c in done.cells for o in c.outputs)


def test_a_line_printed_in_pieces_is_labelled_once(tmp_path):
    annotated(tmp_path / "nb.ipynb", code("import sys, time\nsys.stdout.write('ids:'); sys.stdout.flush()\n"
                                          "time.sleep(0.5)  # the kernel sends the rest as another message\n"
                                          "print(' 1 2 3')"),
              code("print('no end', end='')"), code("print('next cell')"))
    result = kale_magic("run", "nb.ipynb", "--execute-notebook", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    first = next(i for i, line in enumerate(lines) if "ids:" in line)
    assert lines[first:first + 3] == ["[cell 6] ids: 1 2 3", "[cell 7] no end", "[cell 8] next cell"]


def test_output_needs_execute_notebook(tmp_path):
    annotated(tmp_path / "nb.ipynb")
    result = kale_magic("run", "nb.ipynb", "--output", "done.ipynb", cwd=tmp_path)
    assert result.returncode == 1 and "add --execute-notebook" in result.stderr
    assert not (tmp_path / ".kale").exists()


def test_command_line_options_are_added_to_the_notebooks_kale_run(tmp_path):
    annotated(tmp_path / "nb.ipynb", code("run = %kale_run --pipeline mine --experiment nb"),
              code("print('after the run:', run.status, run.plan.experiment, run.plan.description)"))
    result = kale_magic("run", "nb.ipynb", "--experiment", "cli", "--compile-only", "--no-cache",
                        "--no-snapshot", "--description", "it's $HOME {x}", "--execute-notebook", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "after the run: compiled cli it's $HOME {x}" in result.stdout
    (run_dir,) = (tmp_path / ".kale" / "runs").iterdir()
    assert sorted(p.name for p in (run_dir / "notebooks").iterdir()) == ["make.ipynb", "total.ipynb"]
    assert not (run_dir / "executed").exists() or not any((run_dir / "executed").iterdir())
    again = kale_magic("run", "nb.ipynb", "--experiment", "cli", "--compile-only", cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "pipeline mine · experiment cli" in again.stdout.splitlines()[0]  # the notebook's line, then ours


FAILING = [code("%load_ext kale_magic"),
           code("%%step make\nxs = [1, 2]"),
           code("%%step boom\nif len(xs) == 2 and '__session__' not in dir():\n"
                "    raise RuntimeError('only in the pipeline')\ny = 1"),
           code("run = %kale_run"),
           code("print('after the failed run')")]


def test_a_failed_step_fails_the_command_and_is_said_once(tmp_path):
    write(tmp_path / "nb.ipynb", *FAILING)
    result = kale_magic("run", "nb.ipynb", cwd=tmp_path)
    assert result.returncode == 1
    assert "boom failed" in result.stdout
    assert result.stdout.count("RuntimeError: only in the pipeline") == 1  # the step's line; its traceback follows
    assert "Traceback (most recent call last)" in result.stdout
    assert re.fullmatch(r"kale-magic: nb\.ipynb: run \S+ failed \(its error is printed above\)\n", result.stderr)


def test_with_execute_notebook_a_failed_run_stops_the_notebook_like_a_failed_cell(tmp_path):
    write(tmp_path / "nb.ipynb", *FAILING)
    result = kale_magic("run", "nb.ipynb", "--execute-notebook", "--output", "done.ipynb", cwd=tmp_path)
    assert result.returncode == 1
    assert "after the failed run" not in result.stdout
    assert re.fullmatch(r"kale-magic: nb\.ipynb: run \S+ failed \(its error is printed above\)\n",
                        own_stderr(result.stderr)), result.stderr
    assert result.stdout.count("RuntimeError: only in the pipeline") == 1
    assert "kale_magic.last_run()" not in result.stdout  # the pointer to the panel is for notebooks
    done = nbformat.read(str(tmp_path / "done.ipynb"), as_version=4)
    assert [o.ename for o in done.cells[3].outputs if o.output_type == "error"] == ["RunFailed"]
    assert done.cells[4].outputs == []


def test_annotation_mistakes_are_all_named_in_one_refusal(tmp_path):
    write(tmp_path / "nb.ipynb", code("%load_ext kale_magic"),
          code("%%parameters\nn = len('abc')"),
          code("%%step make\nxs = [1]"), code("%%step use --after nowhere\ny = 2"),
          code("accuracy = 0.9"), code("%%metrics\naccuracy"))
    result = kale_magic("run", "nb.ipynb", cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[0] == "kale-magic: 3 problems, the most fundamental first:"
    assert "no step of that name" in lines[1] and "parameter 'n' must be a literal" in lines[2]
    assert "no step produces it" in lines[3] and len(lines) == 4
    assert not (tmp_path / ".kale" / "runs").exists()
    executed = kale_magic("run", "nb.ipynb", "--execute-notebook", cwd=tmp_path)
    assert executed.returncode == 1
    assert own_stderr(executed.stderr).startswith("kale-magic: nb.ipynb: cell 7 (run = %kale_run) raised "
                                                  "ValidationError: 3 problems"), executed.stderr


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
    return json.loads(printed(nb.cells[-1]))


def test_a_kale_tagged_notebook_runs_directly_with_the_metrics_of_its_cells(tmp_path):
    source = kale_tagged(tmp_path / "kale.ipynb")
    result = kale_magic("run", "kale.ipynb", "--param", "n=4", "--execute-notebook", "--output", "done.ipynb",
                        cwd=tmp_path)
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
    result = kale_magic("run", "nb.ipynb", "--execute-notebook", "--output", "done.ipynb", cwd=tmp_path)
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


def test_a_value_that_cannot_move_is_refused_by_the_step_that_saves_it_in_one_sentence(tmp_path):
    write(tmp_path / "nb.ipynb", code("%load_ext kale_magic"), code("%%step a\ngen = (i for i in range(3))"),
          code("%%step b\nfirst = next(gen)"))
    result = kale_magic("run", "nb.ipynb", cwd=tmp_path)
    assert result.returncode == 1
    sentence = ("a failed: 'gen' (a builtins.generator, produced by step 'a') cannot be passed between steps "
                "(a generator is a paused function); re-create it inside each step that uses it, or in %%functions.")
    assert sentence in result.stdout and result.stdout.count("cannot be passed between steps") == 1


def run_steps(workdir) -> list[list[str]]:
    """The steps each run in ``workdir`` executed or reused, runs in the order they started."""
    from kale_magic.history.store import RunStore

    with RunStore.for_workspace(workdir) as store:
        records = sorted(store.runs(), key=lambda r: r.started)
    return [[f"{s.name}:{s.status}" for s in record.steps] for record in records]


def test_every_kale_run_line_runs_in_order_with_the_cells_above_it(tmp_path):
    write(tmp_path / "nb.ipynb", code("%load_ext kale_magic"), code("%%parameters\nn = 3"),
          code("%%step make\nxs = list(range(n))"),
          code("first = %kale_run --param n=2"),
          code("%%step total\ntotal = sum(xs)"), code("%%metrics\ntotal"),
          code("second = %kale_run --param n=5"))
    result = kale_magic("run", "nb.ipynb", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sum(line.startswith("Kale run ") for line in result.stdout.splitlines()) == 2
    assert run_steps(tmp_path) == [["make:succeeded"], ["make:succeeded", "total:succeeded"]]


STOP_OFF = [FAILING[0], code("%config Kale.stop_on_failure = False"), *FAILING[1:],
            code("again = %kale_run --experiment again")]


def test_with_stop_on_failure_off_a_failed_run_lets_the_notebook_go_on(tmp_path):
    write(tmp_path / "nb.ipynb", *STOP_OFF)
    executed = kale_magic("run", "nb.ipynb", "--execute-notebook", cwd=tmp_path)
    assert executed.returncode == 0, executed.stdout + executed.stderr
    assert "[cell 6] after the failed run" in executed.stdout.splitlines()
    went_on = r"kale-magic: nb\.ipynb: run \S+ failed \(its error is printed above\); the notebook went on " \
              r"\(Kale\.stop_on_failure = False\)\n"
    assert re.fullmatch(went_on * 2, own_stderr(executed.stderr)), executed.stderr
    planned = kale_magic("run", "nb.ipynb", cwd=tmp_path)  # from the sources: both %kale_run lines run
    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert re.fullmatch(went_on * 2, planned.stderr), planned.stderr
    assert len(run_steps(tmp_path)) == 4


def test_without_stop_on_failure_off_the_first_failed_run_ends_a_headless_run(tmp_path):
    write(tmp_path / "nb.ipynb", *FAILING, code("again = %kale_run --experiment again"))
    result = kale_magic("run", "nb.ipynb", cwd=tmp_path)
    assert result.returncode == 1 and len(run_steps(tmp_path)) == 1


def test_headless_and_kernel_runs_of_a_notebook_share_the_step_cache(tmp_path):
    write(tmp_path / "nb.ipynb", code("%load_ext kale_magic"), code("%%imports\nimport numpy as np"),
          code("%%parameters\nn = 3"), code("%%step make\nxs = np.arange(n)"),
          code("%%step total\ntotal = int(xs.sum())"), code("%%metrics\ntotal"), code("run = %kale_run"))
    in_kernel = kale_magic("run", "nb.ipynb", "--execute-notebook", cwd=tmp_path)
    assert in_kernel.returncode == 0, in_kernel.stdout + in_kernel.stderr
    headless = kale_magic("run", "nb.ipynb", cwd=tmp_path)
    assert headless.returncode == 0, headless.stdout + headless.stderr
    again = kale_magic("run", "nb.ipynb", "--execute-notebook", cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert run_steps(tmp_path) == [["make:succeeded", "total:succeeded"], ["make:cached", "total:cached"],
                                   ["make:cached", "total:cached"]]
