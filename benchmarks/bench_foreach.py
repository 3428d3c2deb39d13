"""``--foreach`` on the local engine, against its baselines measured in the same run.

    python benchmarks/bench_foreach.py [--repeat 3] [--items 40] [--parts kfold,kfp-local,overhead]

* k-fold x models: a 5-fold x 3-model notebook (scikit-learn; each item fits one model on one
  fold) as one ``%kale_run`` of a ``--foreach`` step over the 15 (model, fold) pairs, against the
  same work as 15 independent ``%kale_run``s of a one-step notebook (``--param model=.. --param
  fold=..``), one after another in the same kernel (what a user without foreach does).
* kfp.local: the same 5-fold x 3-model work as a hand-written ``dsl.ParallelFor`` pipeline (a split
  task saving the data as an artifact, a task listing the 15 pairs, a ParallelFor of train tasks with
  ``parallelism`` = ``Kale.max_parallel``, a summary over ``dsl.Collected`` scores) run by ``kfp.local``'s
  ``SubprocessRunner`` in this environment (no containers: its fastest runner), in the same process.
* per-item overhead: a ``--foreach`` step over N trivial items, against N trivial independent plain
  steps after one root (the same fan-out without foreach) and a chain of N trivial steps (the
  README's per-step figure): the Run task's time / N.

Every run is ``--no-cache --no-snapshot``; the panel's lines are not printed.
"""

import argparse
import builtins
import contextlib
import io
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from bench_local_engine import kale_shell, record  # noqa: E402

IMPORTS = ("%%imports\nimport numpy as np\nfrom sklearn.linear_model import Lasso, LinearRegression, Ridge")
DATA = ("%%step split\nrng = np.random.default_rng(0)\nX = rng.normal(size=(20000, 20))\n"
        "y = X @ rng.normal(size=20) + rng.normal(size=20000)\nfolds = [np.arange(20000)[i::5] for i in range(5)]")
FIT = ("mask = np.ones(len(y), bool)\nmask[folds[fold]] = False\n"
       "est = {'ols': LinearRegression(), 'ridge': Ridge(), 'lasso': Lasso(alpha=0.01)}[model]\n"
       "est.fit(X[mask], y[mask])\nscore = float(est.score(X[folds[fold]], y[folds[fold]]))")
FOREACH = [IMPORTS, "%%parameters\nmodels = ['ols', 'ridge', 'lasso']", DATA,
           "%%step pairs\njobs = [(m, f) for m in models for f in range(5)]",
           "%%step train --foreach job in jobs\nmodel, fold = job\n" + FIT,
           "%%step summary\nbest = max(zip(score, jobs))"]
SINGLE = [IMPORTS, "%%parameters\nmodel = 'ols'\nfold = 0", DATA, "%%step train\n" + FIT]


def run(shell, line: str = "") -> tuple[float, object]:
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        result = shell.run_line_magic("kale_run", f"--no-snapshot --no-cache {line}")
    assert result.status == "succeeded", result.state.error
    return time.perf_counter() - started, result


def kfold(shell) -> tuple[float, float]:
    """(wall of the foreach run, wall of the 15 separate runs)."""
    # The kernel holds the foreach step's produced names as lists, which would clash with the one-step
    # notebook's names: each recording starts from a clean namespace.
    shell.reset()
    record(shell, FOREACH)
    foreach, _ = run(shell)
    shell.reset()
    record(shell, SINGLE)
    separate = 0.0
    for model in ("ols", "ridge", "lasso"):
        for fold in range(5):
            wall, _ = run(shell, f"--param model={model} --param fold={fold}")
            separate += wall
    return foreach, separate


def kfp_local(root: str, parallelism: int = 8) -> float:
    """Wall seconds of the equivalent hand-written ParallelFor pipeline under kfp.local (subprocesses)."""
    from typing import List

    from kfp import dsl, local

    # kfp.local's SubprocessRunner runs each task as `python -m kfp.dsl.executor_main` in this environment
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=root, enable_caching=False)

    @dsl.component(install_kfp_package=False)  # this environment has kfp: no pip per task
    def split(data: dsl.Output[dsl.Artifact]):
        import numpy as np
        rng = np.random.default_rng(0)
        X = rng.normal(size=(20000, 20))
        y = X @ rng.normal(size=20) + rng.normal(size=20000)
        np.savez(data.path, X=X, y=y)

    @dsl.component(install_kfp_package=False)  # this environment has kfp: no pip per task
    def pairs(models: List[str]) -> List[List]:
        return [[m, f] for m in models for f in range(5)]

    @dsl.component(install_kfp_package=False)  # this environment has kfp: no pip per task
    def train(job: List, data: dsl.Input[dsl.Artifact]) -> float:
        import numpy as np
        from sklearn.linear_model import Lasso, LinearRegression, Ridge
        arrays = np.load(data.path + ".npz") if not data.path.endswith(".npz") else np.load(data.path)
        X, y = arrays["X"], arrays["y"]
        model, fold = job[0], int(job[1])  # KFP carries a list's numbers as doubles
        folds = [np.arange(20000)[i::5] for i in range(5)]
        mask = np.ones(len(y), bool)
        mask[folds[fold]] = False
        est = {'ols': LinearRegression(), 'ridge': Ridge(), 'lasso': Lasso(alpha=0.01)}[model]
        est.fit(X[mask], y[mask])
        return float(est.score(X[folds[fold]], y[folds[fold]]))

    @dsl.component(install_kfp_package=False)  # this environment has kfp: no pip per task
    def summary(score: List[float]) -> float:
        return max(score)

    @dsl.pipeline
    def kfold(models: List[str] = ["ols", "ridge", "lasso"]) -> float:
        data = split()
        jobs = pairs(models=models)
        with dsl.ParallelFor(jobs.output, parallelism=parallelism) as job:
            fit = train(job=job, data=data.outputs["data"])
        return summary(score=dsl.Collected(fit.output)).output

    started, own_print = time.perf_counter(), builtins.print
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            kfold()
    finally:  # kfp.local's indented_print swaps builtins.print from its ParallelFor threads and can leave it swapped
        builtins.print = own_print
    return time.perf_counter() - started


def overhead(shell, n: int) -> dict[str, float]:
    """Run-task seconds per instance: foreach items, independent plain steps, a chain."""
    cells = {
        "foreach items": [f"%%parameters\nitems = {list(range(n))!r}", "%%step one --foreach i in items\nv = i + 1"],
        "independent plain steps": ["%%step root\nbase = 1"]
        + [f"%%step s{i} --after root\nv{i} = base + {i}" for i in range(n)],
        "chain of plain steps": ["%%step s0\nv = 0"] + [f"%%step s{i}\nv = v + 1" for i in range(1, n)],
    }
    out = {}
    for label, source in cells.items():
        shell.reset()
        record(shell, source)
        _, result = run(shell)
        out[label] = result.state.tasks["Run"].elapsed / n
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--items", type=int, default=40)
    parser.add_argument("--parts", default="kfold,kfp-local,overhead",
                        help="which comparisons to run (the kfp.local one takes minutes per repeat)")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    home = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        shell = kale_shell(tmp)
        kf = [kfold(shell) for _ in range(args.repeat)] if "kfold" in parts else []
        local_runs = ([kfp_local(os.path.join(tmp, f"kfp-local-{i}")) for i in range(args.repeat)]
                      if "kfp-local" in parts else [])
        per = [overhead(shell, args.items) for _ in range(args.repeat)] if "overhead" in parts else []
        os.chdir(home)  # the shell's exit handler reads the working directory
    if kf:
        foreach = statistics.median(k[0] for k in kf)
        separate = statistics.median(k[1] for k in kf)
        print(f"5-fold x 3 models, --foreach (one run): {foreach:.2f} s; 15 separate %kale_runs: {separate:.2f} s "
              f"({separate / foreach:.2f}x)")
    if local_runs:
        local_wall = statistics.median(local_runs)
        print(f"the same as a hand-written dsl.ParallelFor pipeline under kfp.local (SubprocessRunner): "
              f"{local_wall:.2f} s" + (f" ({local_wall / foreach:.2f}x the --foreach run)" if kf else ""))
    for label in per[0] if per else ():
        print(f"{label}: {statistics.median(p[label] for p in per) * 1000:.1f} ms per instance "
              f"({args.items} of them, Run task, median of {args.repeat})")
    print(f"load average: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
