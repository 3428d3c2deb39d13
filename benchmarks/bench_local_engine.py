"""Local engine overhead vs kfp.local, measured in one run on the same pipelines.

    python benchmarks/bench_local_engine.py [--repeat 5] [--chain 20] [--kernels 3]

* chain: N trivial steps, each passing an int to the next: overhead per step =
  wall time of the run / N (the steps do no work).
* fan-out: a root, 4 independent steps that each sleep 1 s, and a join: the
  critical path is 1 s of sleeping.
* imports: a chain of 5 trivial steps whose ``%%imports`` import pandas and
  scikit-learn, nothing preloaded by hand.  Each measurement is a fresh kernel (a
  new process): it runs the cells one after another as "Run All" does, then
  ``%kale_run`` at once (which waits for whatever is left of the warm worker's
  imports) and ``%kale_run`` again (a re-run in the same kernel).
Baseline: the same pipelines as KFP lightweight components run by kfp.local
(SubprocessRunner(use_venv=False), install_kfp_package=False); in the imports
chain each component imports pandas and scikit-learn, as a component must.
"""


import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

IMPORTS = ("import pandas as pd\n"
           "from sklearn.linear_model import LogisticRegression\n"
           "from sklearn.model_selection import train_test_split")
IMPORTS_CHAIN = 5


def kale_shell(workdir: str):
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    os.chdir(workdir)
    config = Config()
    config.HistoryManager.enabled = False
    shell = InteractiveShell.instance(config=config)
    shell.run_line_magic("load_ext", "kale_magic")
    return shell


def record(shell, cells: list[str]) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        shell.run_line_magic("kale_reset", "")
    for i, cell in enumerate(cells):
        result = shell.run_cell(cell, cell_id=f"c{i}")
        assert result.success


def timed_run(shell) -> tuple[float, float]:
    """(wall time of %kale_run, time of its Run task); the panel's lines are not printed."""
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        run = shell.run_line_magic("kale_run", "--no-snapshot --no-cache")
    wall = time.perf_counter() - started
    assert run.status == "succeeded", run.state.error
    return wall, run.state.tasks["Run"].elapsed


def kale_run(shell, cells: list[str]) -> tuple[float, float]:
    record(shell, cells)
    return timed_run(shell)


def chain_cells(n: int) -> list[str]:
    return ["%%step s0\nv = 0"] + [f"%%step s{i}\nv = v + 1" for i in range(1, n)]


FANOUT = (["%%imports\nimport time", "%%step root\nv = 1"]
          + [f"%%step f{i} --after root\ntime.sleep(1)\nr{i} = v + {i}" for i in range(4)]
          + ["%%step join --after f0,f1,f2,f3\ntotal = r0 + r1 + r2 + r3"])


def fresh_kernel() -> dict:
    """Run in a new process: "Run All" of the imports chain, then %kale_run twice."""
    home = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        shell = kale_shell(tmp)
        started = time.perf_counter()
        record(shell, [f"%%imports\n{IMPORTS}"] + chain_cells(IMPORTS_CHAIN))
        cells = time.perf_counter() - started
        first, _ = timed_run(shell)
        second, _ = timed_run(shell)
        workers = shell.magics_manager.registry["Kale"].workers
        with open(f"/proc/{workers.pid}/status") as status:
            rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
        workers.close()
        os.chdir(home)  # before the folder goes (IPython's exit hooks run in the current folder)
    return {"cells": cells, "first": first, "second": second, "worker_rss_kib": rss}


def kfp_pipelines(n: int):
    import warnings

    from kfp import dsl

    warnings.filterwarnings("ignore", "The default base_image", FutureWarning)  # SubprocessRunner uses none

    @dsl.component(install_kfp_package=False)
    def start() -> int:
        return 0

    @dsl.component(install_kfp_package=False)
    def inc(v: int) -> int:
        return v + 1

    @dsl.component(install_kfp_package=False)
    def start_imports() -> int:
        import pandas as pd  # noqa: F401
        from sklearn.linear_model import LogisticRegression  # noqa: F401
        from sklearn.model_selection import train_test_split  # noqa: F401
        return 0

    @dsl.component(install_kfp_package=False)
    def inc_imports(v: int) -> int:
        import pandas as pd  # noqa: F401
        from sklearn.linear_model import LogisticRegression  # noqa: F401
        from sklearn.model_selection import train_test_split  # noqa: F401
        return v + 1

    @dsl.component(install_kfp_package=False)
    def sleepy(v: int, i: int) -> int:
        import time
        time.sleep(1)
        return v + i

    @dsl.component(install_kfp_package=False)
    def join(a: int, b: int, c: int, d: int) -> int:
        return a + b + c + d

    @dsl.pipeline
    def chain():
        task = start()
        for _ in range(1, n):
            task = inc(v=task.output)

    @dsl.pipeline
    def imports_chain():
        task = start_imports()
        for _ in range(1, IMPORTS_CHAIN):
            task = inc_imports(v=task.output)

    @dsl.pipeline
    def fanout():
        root = start()
        parts = [sleepy(v=root.output, i=i) for i in range(4)]
        join(a=parts[0].output, b=parts[1].output, c=parts[2].output, d=parts[3].output)

    return chain, imports_chain, fanout


def timed(fn) -> float:
    """Wall time of a kfp.local pipeline; its log lines are not printed (as the panel's are not)."""
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        fn()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--chain", type=int, default=20)
    parser.add_argument("--kernels", type=int, default=3, help="fresh kernels for the imports chain")
    parser.add_argument("--fresh-kernel", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fresh_kernel:
        print(json.dumps(fresh_kernel()))
        return
    n = args.chain
    kernels = [json.loads(subprocess.run([sys.executable, __file__, "--fresh-kernel"], check=True,
                                         capture_output=True, text=True).stdout.splitlines()[-1])
               for _ in range(args.kernels)]
    home = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        import logging

        from kfp import local

        logging.getLogger().setLevel(logging.WARNING)
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=os.path.join(tmp, "kfp-root"))
        kfp_chain, kfp_imports, kfp_fanout = kfp_pipelines(n)
        shell = kale_shell(tmp)
        kale_run(shell, chain_cells(3))  # start and warm the worker server
        # the two chains alternate, so that a shared machine's changing load falls on both alike
        chain, kfp_chain_times = [], []
        for _ in range(args.repeat):
            chain.append(kale_run(shell, chain_cells(n)))
            kfp_chain_times.append(timed(kfp_chain))
        fan = [kale_run(shell, FANOUT) for _ in range(max(1, args.repeat // 2))]
        kfp_import_times = [timed(kfp_imports) for _ in range(args.kernels)]
        kfp_fan_times = [timed(kfp_fanout)]
        shell.magics_manager.registry["Kale"].workers.close()
        os.chdir(home)

    med = statistics.median
    kale_wall = med(w for w, _ in chain) / n
    kfp_step = med(kfp_chain_times) / n
    per_import_step = {k: med(run[k] for run in kernels) / IMPORTS_CHAIN for k in ("first", "second")}
    rows = [
        ("chain: overhead per step, %kale_run wall", f"{kale_wall * 1000:.1f} ms",
         f"≤ 25 ms; {kfp_step / kale_wall:.2f}× faster than kfp.local (goal ≥ 2.5×)"),
        ("chain: overhead per step, Run task only", f"{med(r for _, r in chain) / n * 1000:.1f} ms", ""),
        ("chain: kfp.local per step", f"{kfp_step * 1000:.1f} ms", "baseline"),
        ("fan-out 4×1 s: %kale_run wall", f"{med(w for w, _ in fan):.2f} s", "≤ 1.2 s (1.2× of 1 s)"),
        ("fan-out 4×1 s: Run task only", f"{med(r for _, r in fan):.2f} s", ""),
        ("fan-out 4×1 s: kfp.local", f"{med(kfp_fan_times):.2f} s", "baseline"),
        ("imports: per step, first %kale_run after Run All", f"{per_import_step['first']:.3f} s", "≤ 0.15 s"),
        ("imports: per step, %kale_run again", f"{per_import_step['second']:.3f} s", "≤ 0.15 s"),
        ("imports: kfp.local per step", f"{med(kfp_import_times) / IMPORTS_CHAIN:.3f} s", "baseline"),
        ("imports: Run All of the cells (the kernel's import)", f"{med(k['cells'] for k in kernels):.2f} s", ""),
        ("imports: warm worker's memory (RSS)", f"{med(k['worker_rss_kib'] for k in kernels) / 1024:.0f} MiB", ""),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, chain of {n} steps, median of {args.repeat}; "
          f"imports chain of {IMPORTS_CHAIN} steps, median of {args.kernels} fresh kernels")
    for name, value, goal in rows:
        print(f"{name:<{width}}  {value:>10}  {goal}")


if __name__ == "__main__":
    main()
