"""Kubeflow steps in real containers, default image: kale-magic vs Kale 2.3.0 vs kfp's notebook component.

The same two-step notebook (``load`` makes an array, ``stats`` takes its mean), each tool's own YAML, one
``kfp.local.DockerRunner`` on the local ``python:3.11`` base image (tests/containers; Kale's steps name
``python:3.12``, which is tagged onto the same image), with this machine's pip sources and one shared pip
download cache, so every contender installs from the same place. Each contender runs once to fill the
cache, then ``--repeat`` times; the figures are medians.

Per-step start-up cost is a task's wall time (container start, installs, imports): the steps' own code
takes milliseconds. kale-magic also has its pipeline-level ``kale-environment`` task, which installs once
for all steps, reported separately, and measured again with kfp.local's cache on (as KFP's is on a
cluster), where later runs reuse it.

The floor, measured in the same run: a container of the same image started with ``docker run``, importing
numpy (the step's own import, the kernel's version, from a folder mounted into it) and running the step's
line: what any tool must pay per step.

Goal (DESIGN.md): per-step start-up ≤ 2× the floor, ≤ Kale 2.3.0's and the notebook component's.

    python benchmarks/bench_kfp_containers.py [--repeat 3] [--only kale-magic,kale,notebook-component]

Needs a Docker daemon (tests/containers/dockerd.sh) and root for the base image's first build.
Kale 2.3.0 is installed from PyPI into its own venv under ``~/.cache/kale-magic-bench``.
"""

import argparse
import contextlib
import io
import os
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import containers  # noqa: E402

CACHE = Path.home() / ".cache" / "kale-magic-bench"
KALE = "kubeflow-kale==2.3.0"
KALE_IMAGE = "python:3.12"  # what Kale 2.3.0's steps name
N = 1000
LOAD = "x = np.arange(n, dtype=float)"
STATS = "mean = float(x.mean())"
TASK_LINE = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d+) - INFO - (Executing task|Task) '?([\w-]+)'?"
                       r"(?: finished with status (\w+))?")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


# the three contenders: each writes its YAML for the same notebook -----------------------------
def kale_magic_yaml(work: Path, root: Path, caching: bool = True) -> Path:
    """The notebook annotated with magics, run in a real kernel, compiled with the defaults
    (``caching=False``: its steps marked ``--no-cache``, so that only the environment task is reused;
    ``Kfp.caching = False`` would turn KFP's cache off for the environment task too, which obeys it)."""
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    config = Config()
    config.HistoryManager.enabled = False
    here = os.getcwd()
    os.chdir(work)
    shell = InteractiveShell(config=config)
    shell.run_line_magic("load_ext", "kale_magic")
    shell.run_line_magic("config", f"Kfp.pipeline_root = {str(root)!r}")  # the runtime bundle is published there
    no_cache = "" if caching else " --no-cache"
    for cell in ("%%imports\nimport numpy as np", f"%%parameters\nn = {N}", f"%%step load{no_cache}\n{LOAD}",
                 f"%%step stats{no_cache}\n{STATS}", "%%metrics\nmean"):
        result = shell.run_cell(cell)
        result.raise_error()
    run = shell.run_line_magic("kale_run", "--engine kfp --compile-only --no-snapshot --pipeline bench")
    InteractiveShell.clear_instance()
    os.chdir(here)
    return Path(run.pipeline_file)


def kale_yaml(work: Path, root: Path) -> Path:
    """The notebook with Kale's tags, compiled by Kale 2.3.0's own CLI in its own venv."""
    kale = _kale_venv()
    cells = [(["imports"], "import numpy as np"), (["pipeline-parameters"], f"n = {N}"),
             (["step:load"], LOAD), (["step:stats", "prev:load"], STATS), (["pipeline-metrics"], "print(mean)")]
    notebook = {"nbformat": 4, "nbformat_minor": 5,
                "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                             "kubeflow_notebook": {"experiment_name": "bench", "pipeline_name": "bench",
                                                   "pipeline_description": "", "volumes": []}},
                "cells": [{"cell_type": "code", "id": f"c{i}", "metadata": {"tags": tags}, "source": source,
                           "outputs": [], "execution_count": None} for i, (tags, source) in enumerate(cells)]}
    path = work / "kale_bench.ipynb"
    path.write_text(json.dumps(notebook))
    subprocess.run([str(kale), "--nb", path.name, "--pipeline_name", "bench", "--experiment_name", "bench"],
                   cwd=work, check=True, capture_output=True)
    return work / ".kale" / "bench.pipeline.yaml"


def notebook_component_yaml(work: Path, root: Path) -> Path:
    """Two notebooks as kfp ``dsl.notebook_component``s; the array travels as a Dataset."""
    from kfp import compiler, dsl
    from kfp.dsl import Dataset, Input, Output

    def notebook(name: str, cells: list[str]) -> str:
        node = {"nbformat": 4, "nbformat_minor": 5, "metadata": {"kernelspec": {"name": "python3",
                                                                               "language": "python"}},
                "cells": [{"cell_type": "code", "id": f"c{i}", "source": c, "outputs": [], "execution_count": None,
                           "metadata": {"tags": ["parameters"]} if i == 0 else {}} for i, c in enumerate(cells)]}
        path = work / f"{name}.ipynb"
        path.write_text(json.dumps(node))
        return str(path)

    packages = ["nbclient>=0.10,<1", "ipykernel>=6,<7", "jupyter_client>=7,<9", "numpy"]
    load_nb = notebook("load", ["n = 0\nout = ''", "import numpy as np", LOAD, "np.save(out, x)"])
    stats_nb = notebook("stats", ["src = ''", "import numpy as np", "x = np.load(src)", STATS, "print(mean)"])

    @dsl.notebook_component(notebook_path=load_nb, base_image=containers.BASE_IMAGE, packages_to_install=packages)
    def load(n: int, x: Output[Dataset]):
        dsl.run_notebook(n=n, out=x.path + ".npy")
        import os
        os.rename(x.path + ".npy", x.path)

    @dsl.notebook_component(notebook_path=stats_nb, base_image=containers.BASE_IMAGE, packages_to_install=packages)
    def stats(x: Input[Dataset]):
        dsl.run_notebook(src=x.path)

    @dsl.pipeline(name="bench")
    def pipeline(n: int = N):
        stats(x=load(n=n).outputs["x"])

    path = work / "notebook_components.yaml"
    compiler.Compiler().compile(pipeline, str(path))
    return path


CONTENDERS = {"kale-magic": kale_magic_yaml, "kale": kale_yaml, "notebook-component": notebook_component_yaml}


# running ----------------------------------------------------------------------------------------
def _kale_venv() -> Path:
    venv = CACHE / "kale-2.3.0"
    kale = venv / "bin" / "kale"
    if not kale.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", KALE], check=True)
    return kale


def floor(client, repeat: int) -> list[float]:
    """Seconds of ``docker run`` of the base image importing numpy (mounted, the kernel's version) and running
    the load step's line: container start + the step's own imports + its code."""
    import importlib.metadata

    from docker.types import Mount

    target = CACHE / f"floor-numpy-{importlib.metadata.version('numpy')}"
    if not (target / "numpy").is_dir():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                        f"numpy=={importlib.metadata.version('numpy')}"], check=True)
    code = f"import numpy as np\nn = {N}\n{LOAD}\nprint(float(x.mean()))"
    times = []
    for _ in range(repeat + 1):
        start = time.perf_counter()
        client.containers.run(containers.BASE_IMAGE, ["python3", "-c", code], remove=True,
                              environment={"PYTHONPATH": "/floor"},
                              mounts=[Mount("/floor", str(target), type="bind", read_only=True)])
        times.append(time.perf_counter() - start)
    return times[1:]


def run_yaml(path: Path, root: Path, caching: bool = False) -> tuple[float, dict[str, float]]:
    """Run a compiled pipeline under the DockerRunner; wall time and each task's seconds (from kfp.local's log).

    ``caching``: kfp.local's cache on (in ``root``), as KFP's is on a cluster: kale-magic's environment
    task is then reused by the runs after the first.
    """
    from kfp import components, local

    local.init(runner=containers.runner(CACHE / "pip-cache"), pipeline_root=str(root), enable_caching=caching)
    pipeline = components.load_component_from_file(str(path))
    out = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(out):
        pipeline()
    wall = time.perf_counter() - start
    return wall, task_seconds(out.getvalue())


def task_seconds(log: str) -> dict[str, float]:
    started, took = {}, {}
    for line in log.splitlines():
        match = TASK_LINE.match(ANSI.sub("", line))
        if not match:
            continue
        h, m, s, ms, kind, task, status = match.groups()
        at = int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 10 ** len(ms)
        if kind == "Executing task":
            started[task] = at
        elif status and task in started:
            took[task] = at - started.pop(task)
    return took


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", default=",".join(CONTENDERS))
    args = parser.parse_args()
    client = containers.connect()
    image = client.images.get(containers.ensure_image(client))
    image.tag(*KALE_IMAGE.split(":"))  # Kale's steps name python:3.12: the same local base image
    results = {}
    floors = floor(client, args.repeat)
    print(f"floor (docker run + import numpy + the step's line): {statistics.median(floors):.2f} s per step",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="kale-bench-") as tmp:
        for name in args.only.split(","):
            work = Path(tmp) / name
            (work / "no-step-cache").mkdir(parents=True)
            yaml = CONTENDERS[name](work, work / "root")
            # one root per contender (kale-magic's runtime bundle is published into it, where kfp.local mounts it);
            # each run writes its own folder there, and kfp.local's cache is off
            runs = [run_yaml(yaml, work / "root") for i in range(args.repeat + 1)][1:]  # first fills the pip cache
            results[name] = runs
            print(f"{name}: {summary(runs)}", flush=True)
            if name == "kale-magic":  # later runs on a cluster: KFP's cache holds the environment
                uncached_steps = kale_magic_yaml(work / "no-step-cache", work / "root-cached", caching=False)
                cached = [run_yaml(uncached_steps, work / "root-cached", caching=True)
                          for _ in range(args.repeat + 1)][1:]
                results["kale-magic (environment cached)"] = cached
                print(f"kale-magic, environment cached: {summary(cached)}", flush=True)
    print(json.dumps({"floor": floors, **{name: [{"wall": w, "tasks": t} for w, t in runs]
                                          for name, runs in results.items()}}, indent=1))


def summary(runs) -> str:
    wall = statistics.median(w for w, _ in runs)
    tasks = {}
    for _, took in runs:
        for task, seconds in took.items():
            tasks.setdefault(task, []).append(seconds)
    per_task = ", ".join(f"{t} {statistics.median(v):.1f} s" for t, v in sorted(tasks.items()))
    return f"wall {wall:.1f} s ({per_task})"


if __name__ == "__main__":
    main()
