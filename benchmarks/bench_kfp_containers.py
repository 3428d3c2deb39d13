"""Kubeflow steps in real containers: kale-magic (default image, and its own image) vs Kale 2.3.0 vs kfp's notebook component.

The same two-step notebook (``load`` makes an array, ``stats`` takes its mean), each tool's own YAML, one
``kfp.local.DockerRunner`` on the local ``python:3.11`` base image (tests/containers; Kale's steps name
``python:3.12``, which is tagged onto the same image), with this machine's pip sources and one shared pip
download cache (kept under ``~/.cache/kale-magic-bench``), so every contender installs from the same place.
Each contender runs ``--warmup`` times (default once) to fill the cache, then ``--repeat`` times; the
figures are medians. ``--repeat 0`` only warms the cache, for a later pass with ``--warmup 0``.

Per-step start-up cost is a task's wall time (container start, installs, imports): the steps' own code
takes milliseconds. kale-magic also has its pipeline-level ``kale-environment`` task, which installs once
for all steps, reported separately, and measured again with kfp.local's cache on (as KFP's is on a
cluster), where later runs reuse it. ``kale-magic-image``: the same notebook on the image ``kale-magic
image`` builds for it (built once, before the timed runs; its build time is reported on its own), compiled
with ``Kfp.base_image`` set to it and ``Kfp.install_packages = False``: no environment task, nothing
installed or unpacked by a step.

kfp.local ignores the pipeline's Kubernetes platform config; every run here gets the emptyDir volumes its
YAML asks for, as a cluster's driver mounts them (tests/containers/platform.py: a ``medium: Memory`` one is a
tmpfs of its size). kale-magic's steps on the stock image unpack their environment into such a volume.

Two floors, measured in the same run, before the series and again after them (the load drifts over a run
this long; the ratios use the median of both):

- ``docker run``: a container of the base image started with ``docker run``, importing numpy (the step's
  own import, the kernel's version, from a folder mounted into it) and running the step's line: what any
  tool must pay per step for a container.
- ``kfp.local``: the same ``DockerRunner`` running a two-task pipeline of plain lightweight components
  (``install_kfp_package=False``) on an image that already holds numpy and kfp (built once, before the
  timed runs), each task doing only the step's import and line: what any KFP tool pays per step on this
  runner (kfp's executor, its input/output files, kfp.local's container handling), with nothing installed.

The floors and the image series take seconds a run, so they run at least 3 times whatever ``--repeat`` says.

Goal (DESIGN.md): per-step start-up ≤ 2× the floor, ≤ Kale 2.3.0's and the notebook component's. The last
lines print every series' per-step median and its ratio to each floor.

    python benchmarks/bench_kfp_containers.py [--repeat 3] [--only SERIES,...] [--json FILE]

SERIES: kale-magic (also runs "environment cached"), kale-magic-image, kale, notebook-component.

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


# the contenders: each writes its YAML for the same notebook ------------------------------------
def notebook_cells(caching: bool = True) -> list[str]:
    """The notebook, annotated with the magics (``caching=False``: its steps marked ``--no-cache``)."""
    no_cache = "" if caching else " --no-cache"
    return ["%%imports\nimport numpy as np", f"%%parameters\nn = {N}", f"%%step load{no_cache}\n{LOAD}",
            f"%%step stats{no_cache}\n{STATS}", "%%metrics\nmean"]


def kale_magic_yaml(work: Path, root: Path, caching: bool = True, settings: dict | None = None) -> Path:
    """The notebook annotated with magics, run in a real kernel, compiled with the defaults
    (``caching=False``: its steps marked ``--no-cache``, so that only the environment task is reused;
    ``Kfp.caching = False`` would turn KFP's cache off for the environment task too, which obeys it);
    ``settings``: further ``%config`` lines (``Kfp.base_image``, ...)."""
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    config = Config()
    config.HistoryManager.enabled = False
    here = os.getcwd()
    os.chdir(work)
    try:
        shell = InteractiveShell(config=config)
        shell.run_line_magic("load_ext", "kale_magic")
        shell.run_line_magic("config", f"Kfp.pipeline_root = {str(root)!r}")  # the runtime bundle is published there
        for name, value in (settings or {}).items():
            shell.run_line_magic("config", f"{name} = {value!r}")
        for cell in notebook_cells(caching):
            result = shell.run_cell(cell)
            result.raise_error()
        run = shell.run_line_magic("kale_run", "--engine kfp --compile-only --no-snapshot --pipeline bench")
    finally:
        InteractiveShell.clear_instance()
        os.chdir(here)
    return Path(run.pipeline_file)


def kale_magic_image(work: Path) -> tuple[str, float]:
    """The image ``kale-magic image`` builds for the notebook (its tag) and the build's seconds: the
    notebook's libraries at the kernel's versions, kfp and this kale-magic on the base image."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    work.mkdir(parents=True, exist_ok=True)
    notebook = new_notebook(cells=[new_code_cell(c) for c in ["%load_ext kale_magic", *notebook_cells()]])
    notebook.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "Python 3"}
    nbformat.write(notebook, str(work / "bench.ipynb"))
    tag = f"kale-bench/steps:{os.getpid()}"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "kale_magic.cli", "image", "bench.ipynb", "-t", tag, "--network", "host"],
                   cwd=work, check=True, capture_output=True)
    return tag, time.perf_counter() - start


def image_yaml(tag: str):
    """kale-magic compiling for the image ``tag``: nothing installed, no environment task."""
    def compile_(work: Path, root: Path) -> Path:
        return kale_magic_yaml(work, root, settings={"Kfp.base_image": tag, "Kfp.install_packages": False})
    return compile_


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


def floor_kfp_yaml(image: str):
    """The second floor: two plain lightweight components on ``image`` (numpy and kfp already in it), each
    doing only the step's import and line; kfp installs nothing (``install_kfp_package=False``)."""
    def compile_(work: Path, root: Path) -> Path:
        from kfp import compiler, dsl

        @dsl.component(base_image=image, install_kfp_package=False)
        def load(n: int):
            import numpy as np
            x = np.arange(n, dtype=float)  # noqa: F841 (LOAD)

        @dsl.component(base_image=image, install_kfp_package=False)
        def stats(n: int) -> float:
            import numpy as np
            x = np.arange(n, dtype=float)  # what load made (microseconds), then STATS
            mean = float(x.mean())
            return mean

        @dsl.pipeline(name="bench-floor")
        def pipeline(n: int = N):
            stats(n=n).after(load(n=n))

        path = work / "floor.yaml"
        compiler.Compiler().compile(pipeline, str(path))
        return path
    return compile_


CONTENDERS = ("kale-magic", "kale-magic-image", "kale", "notebook-component")
STEP_TASKS = ("load", "stats")  # the notebook's steps, as each tool names their tasks
LOGS: Path | None = None  # --logs
WARMUP = 1  # --warmup
CHEAP_REPEAT = 3  # the floors and the image series take seconds a run: at least this many runs each
UNPACKED = re.compile(r"kale-magic: .*?unpacked .*? in ([\d.]+) s")  # a kale-magic step's log (bootstrap.py)


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
    warmup = max(WARMUP, 1)
    for _ in range(warmup + repeat):
        start = time.perf_counter()
        client.containers.run(containers.BASE_IMAGE, ["python3", "-c", code], remove=True,
                              environment={"PYTHONPATH": "/floor"},
                              mounts=[Mount("/floor", str(target), type="bind", read_only=True)])
        times.append(time.perf_counter() - start)
    return times[warmup:]


def floor_image(client) -> tuple[str, float]:
    """The second floor's image: the base image with numpy (the kernel's version) and kfp (the compiling
    version, without its dependencies, as kfp's own lightweight components install it); its build's seconds."""
    import importlib.metadata

    numpy, kfp = importlib.metadata.version("numpy"), importlib.metadata.version("kfp")
    tag = f"kale-bench/floor:numpy-{numpy}-kfp-{kfp}"
    dockerfile = (f"FROM {containers.BASE_IMAGE}\nRUN python3 -m pip install --quiet --no-cache-dir --no-deps "
                  f"numpy=={numpy} kfp=={kfp}\n")
    start = time.perf_counter()
    client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, network_mode="host", rm=True)
    return tag, time.perf_counter() - start


def run_yaml(path: Path, root: Path, caching: bool = False,
             label: str = "run") -> tuple[float, dict[str, float], list[float]]:
    """Run a compiled pipeline under the DockerRunner; wall time, each task's seconds (from kfp.local's log)
    and the seconds kale-magic's steps said they spent unpacking the environment.

    ``caching``: kfp.local's cache on (in ``root``), as KFP's is on a cluster: kale-magic's environment
    task is then reused by the runs after the first.
    """
    from kfp import components, local

    import pytest

    from containers import platform

    local.init(runner=containers.runner(CACHE / "pip-cache"), pipeline_root=str(root), enable_caching=caching)
    pipeline = components.load_component_from_file(str(path))
    out = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(out), pytest.MonkeyPatch.context() as monkeypatch:
        platform.install(monkeypatch, path)  # the emptyDir volumes a cluster's driver would mount
        pipeline()
    wall = time.perf_counter() - start
    log = ANSI.sub("", out.getvalue())
    if LOGS:
        LOGS.mkdir(parents=True, exist_ok=True)
        (LOGS / f"{label}.{len(list(LOGS.glob(label + '.*.log')))}.log").write_text(log)
    return wall, task_seconds(log), [float(m) for m in UNPACKED.findall(log)]


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
            if status != "SUCCESS":  # a failed task's seconds are no start-up figure
                raise RuntimeError(f"task {task} finished with status {status}:\n{log[-3000:]}")
            took[task] = at - started.pop(task)
    return took


def measure(name: str, compile_, work: Path, repeat: int, caching: bool = False, cheap: bool = False) -> list:
    """``repeat`` runs of the YAML ``compile_`` writes, after ``--warmup`` runs that fill the pip cache (and,
    with ``caching``, at least one that fills kfp.local's cache; ``cheap``, a series of seconds: at least one
    anyway). One root per series (kale-magic's runtime
    bundle is published into it, where kfp.local mounts it); each run writes its own folder there."""
    (work / name).mkdir(parents=True)
    yaml = compile_(work / name, work / name / "root")
    warmup = max(WARMUP, 1) if caching or cheap else WARMUP
    runs = [run_yaml(yaml, work / name / "root", caching=caching, label=name) for _ in range(warmup + repeat)]
    runs = runs[warmup:]
    print(f"{name}: {summary(runs) if runs else 'warmed up, nothing measured'}", flush=True)
    return runs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", default=",".join(CONTENDERS), help=f"among {', '.join(CONTENDERS)}")
    parser.add_argument("--json", type=Path, help="write the figures there too (after every series)")
    parser.add_argument("--logs", type=Path, help="write each run's kfp.local log into this folder")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured runs first, filling the shared pip "
                        "cache (0: an earlier pass filled it; the cached series always warms kfp.local's cache)")
    args = parser.parse_args()
    global LOGS, WARMUP
    LOGS, WARMUP = args.logs, args.warmup
    only = args.only.split(",")
    unknown = set(only) - set(CONTENDERS)
    if unknown:
        parser.error(f"unknown series {', '.join(sorted(unknown))}: choose among {', '.join(CONTENDERS)}")
    print(f"load at start: {load()}", flush=True)
    client = containers.connect()
    image = client.images.get(containers.ensure_image(client))
    image.tag(*KALE_IMAGE.split(":"))  # Kale's steps name python:3.12: the same local base image
    figures: dict = {"load": {"start": load()}, "floors": {}, "builds": {}, "series": {}, "failed": {}}

    def record(name, runs):
        figures["series"][name] = [{"wall": w, "tasks": t, "unpacked": u} for w, t, u in runs]
        if args.json:
            args.json.write_text(json.dumps(figures, indent=1))

    cheap = max(args.repeat, CHEAP_REPEAT)
    built = []
    with tempfile.TemporaryDirectory(prefix="kale-bench-") as tmp:
        work = Path(tmp)

        def floors(when):
            """Both floors (before and after the series: the load drifts over a run of this length)."""
            figures["floors"].setdefault("docker run", []).extend(floor(client, cheap))
            runs = measure(f"floor-kfp-{when}", floor_kfp_yaml(floor_tag), work, cheap, cheap=True)
            figures["floors"].setdefault("kfp.local", []).extend(s for _, tasks, _ in runs for s in step_seconds(tasks))
            record(f"floor (kfp.local, numpy + kfp in the image), {when}", runs)
            print(f"floors, {when}: docker run {statistics.median(figures['floors']['docker run']):.2f} s, "
                  f"kfp.local {statistics.median(figures['floors']['kfp.local']):.2f} s per step", flush=True)

        def run_series(name):
            if name == "kale-magic-image":
                tag, seconds = kale_magic_image(work / "image-context")
                built.append(tag)
                figures["builds"]["kale-magic image"] = seconds
                print(f"kale-magic image built in {seconds:.1f} s", flush=True)
                record(name, measure(name, image_yaml(tag), work, cheap, cheap=True))
            elif name == "kale-magic":
                record(name, measure(name, kale_magic_yaml, work, args.repeat))
                # later runs on a cluster: KFP's cache holds the environment (the steps are --no-cache)
                cached = measure("kale-magic-cached", lambda w, r: kale_magic_yaml(w, r, caching=False), work,
                                 args.repeat, caching=True)
                record("kale-magic (environment cached)", cached)
            else:
                compile_ = {"kale": kale_yaml, "notebook-component": notebook_component_yaml}[name]
                record(name, measure(name, compile_, work, args.repeat))

        try:
            floor_tag, seconds = floor_image(client)
            figures["builds"]["floor image (numpy + kfp)"] = seconds
            floors("start")
            for name in only:
                try:
                    run_series(name)
                except Exception as error:  # one series failing leaves the others' figures standing
                    figures["failed"][name] = f"{type(error).__name__}: {error}"[:2000]
                    print(f"{name}: failed: {figures['failed'][name]}", flush=True)
            floors("end")
        finally:
            for tag in built:
                client.images.remove(tag, force=True)
    figures["load"]["end"] = load()
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    print(json.dumps(figures, indent=1))
    print(table(figures))


def load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def step_seconds(tasks: dict[str, float]) -> list[float]:
    """The seconds of the notebook's steps among a run's tasks (not environment, importer or driver tasks)."""
    return [s for task, s in tasks.items() if any(step in task for step in STEP_TASKS)]


def table(figures: dict) -> str:
    """Every series' per-step median (over its steps and runs: n) and its ratio to each floor, as Markdown."""
    floors = {name: statistics.median(times) for name, times in figures["floors"].items()}
    head = " | ".join(f"× floor ({name})" for name in floors)
    lines = [f"| series | per step (s) | n | {head} | other |", "|---" * (4 + len(floors)) + "|"]
    rows = [(f"floor ({name})", figures["floors"][name], "") for name in floors]
    for name, runs in figures["series"].items():
        if name.startswith("floor"):
            continue
        steps = [s for run in runs for s in step_seconds(run["tasks"])]
        by_task = _by_task(run["tasks"] for run in runs)
        other = [f"{task} {statistics.median(v):.1f} s" for task, v in sorted(by_task.items())
                 if not any(step in task for step in STEP_TASKS)]
        unpacked = [u for run in runs for u in run["unpacked"]]
        if unpacked:
            other.append(f"unpacking {statistics.median(unpacked):.2f} s per step")
        if name == "kale-magic-image" and "kale-magic image" in figures["builds"]:
            other.append(f"image built once in {figures['builds']['kale-magic image']:.0f} s")
        rows.append((name, steps, "; ".join(other)))
    for name, steps, other in rows:
        if not steps:
            continue
        median = statistics.median(steps)
        ratios = " | ".join(f"{median / f:.1f}×" for f in floors.values())
        lines.append(f"| {name} | {median:.2f} | {len(steps)} | {ratios} | {other} |")
    return "\n".join(lines)


def _by_task(runs_tasks) -> dict[str, list[float]]:
    """Task -> its seconds in every run, from each run's task -> seconds."""
    tasks: dict[str, list[float]] = {}
    for took in runs_tasks:
        for task, seconds in took.items():
            tasks.setdefault(task, []).append(seconds)
    return tasks


def summary(runs) -> str:
    wall = statistics.median(w for w, _, _ in runs)
    by_task = _by_task(took for _, took, _ in runs)
    per_task = ", ".join(f"{t} {statistics.median(v):.1f} s" for t, v in sorted(by_task.items()))
    unpacked = [u for _, _, run in runs for u in run]
    unpacking = f"; unpacking {statistics.median(unpacked):.2f} s per step" if unpacked else ""
    return f"wall {wall:.1f} s ({per_task}{unpacking})"


if __name__ == "__main__":
    main()
