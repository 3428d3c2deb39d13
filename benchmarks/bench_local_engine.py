"""Local engine overhead vs kfp.local, measured in one run on the same pipelines.

    python benchmarks/bench_local_engine.py [--repeat 5] [--chain 20]

* chain: N trivial steps, each passing an int to the next: overhead per step =
  wall time of the run / N (the steps do no work).
* fan-out: a root, 4 independent steps that each sleep 1 s, and a join: the
  critical path is 1 s of sleeping.
Baseline: the same pipelines as KFP lightweight components run by kfp.local
(SubprocessRunner(use_venv=False), install_kfp_package=False).
"""


import argparse
import os
import statistics
import sys
import tempfile
import time


def kale_shell(workdir: str):
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    os.chdir(workdir)
    config = Config()
    config.HistoryManager.enabled = False
    shell = InteractiveShell.instance(config=config)
    shell.run_line_magic("load_ext", "kale_magic")
    return shell


def kale_run(shell, cells: list[str]) -> tuple[float, float]:
    """(wall time of %kale_run, time of its Run task) for a freshly recorded pipeline."""
    shell.run_line_magic("kale_reset", "")
    for i, cell in enumerate(cells):
        result = shell.run_cell(cell, cell_id=f"c{i}")
        assert result.success
    started = time.perf_counter()
    run = shell.run_line_magic("kale_run", "--no-snapshot --no-cache")
    wall = time.perf_counter() - started
    assert run.status == "succeeded", run.state.error
    return wall, run.state.tasks["Run"].elapsed


def chain_cells(n: int) -> list[str]:
    return ["%%step s0\nv = 0"] + [f"%%step s{i}\nv = v + 1" for i in range(1, n)]


FANOUT = (["%%imports\nimport time", "%%step root\nv = 1"]
          + [f"%%step f{i} --after root\ntime.sleep(1)\nr{i} = v + {i}" for i in range(4)]
          + ["%%step join --after f0,f1,f2,f3\ntotal = r0 + r1 + r2 + r3"])


def kfp_pipelines(n: int):
    from kfp import dsl

    @dsl.component(install_kfp_package=False)
    def start() -> int:
        return 0

    @dsl.component(install_kfp_package=False)
    def inc(v: int) -> int:
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
    def fanout():
        root = start()
        parts = [sleepy(v=root.output, i=i) for i in range(4)]
        join(a=parts[0].output, b=parts[1].output, c=parts[2].output, d=parts[3].output)

    return chain, fanout


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--chain", type=int, default=20)
    args = parser.parse_args()
    n = args.chain
    with tempfile.TemporaryDirectory() as tmp:
        shell = kale_shell(tmp)
        kale_run(shell, chain_cells(3))  # start and warm the worker server
        chain = [kale_run(shell, chain_cells(n)) for _ in range(args.repeat)]
        fan = [kale_run(shell, FANOUT) for _ in range(max(1, args.repeat // 2))]

        import logging

        from kfp import local

        logging.getLogger().setLevel(logging.WARNING)
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=os.path.join(tmp, "kfp-root"))
        kfp_chain, kfp_fanout = kfp_pipelines(n)
        kfp_chain_times = [timed(kfp_chain) for _ in range(max(1, args.repeat // 2))]
        kfp_fan_times = [timed(kfp_fanout)]

    med = statistics.median
    kale_wall = med(w for w, _ in chain)
    kale_engine = med(r for _, r in chain)
    rows = [
        ("chain: overhead per step, %kale_run wall", f"{kale_wall / n * 1000:.1f} ms", "≤ 50 ms"),
        ("chain: overhead per step, Run task only", f"{kale_engine / n * 1000:.1f} ms", ""),
        ("chain: kfp.local per step", f"{med(kfp_chain_times) / n * 1000:.1f} ms", "baseline"),
        ("fan-out 4×1 s: %kale_run wall", f"{med(w for w, _ in fan):.2f} s", "≤ 1.2 s (1.2× of 1 s)"),
        ("fan-out 4×1 s: Run task only", f"{med(r for _, r in fan):.2f} s", ""),
        ("fan-out 4×1 s: kfp.local", f"{med(kfp_fan_times):.2f} s", "baseline"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, chain of {n} steps, median of {args.repeat}")
    for name, value, goal in rows:
        print(f"{name:<{width}}  {value:>10}  {goal}")


if __name__ == "__main__":
    main()
