"""Per-step cost of ``kale-magic run`` from 200 to 2,000 steps, measured in one run.

    python benchmarks/bench_many_steps.py [--sizes 200,2000] [--baseline /path/to/other/checkout]

Each size is a notebook of N trivial steps in a chain (each adds one to the value of the step
before, as a notebook without ``--after`` runs), run by ``kale-magic run`` in a fresh process with
the snapshot and the cache on, as a user would: parse, plan, write N step notebooks, run N steps,
record the run, print a line per step.  Cost per step = wall time / N; flat means the 2,000-step
figure is the 200-step one.  ``--baseline`` runs the same notebooks with another kale-magic
checkout (e.g. main before this change) in the same run, for the ratio.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def notebook(n: int, path: Path) -> None:
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    cells = [new_code_cell("%load_ext kale_magic"), new_code_cell("%%parameters\nstart = 0"),
             new_code_cell("%%step s0\nv0 = start + 1")]
    cells += [new_code_cell(f"%%step s{i}\nv{i} = v{i - 1} + 1") for i in range(1, n)]
    cells.append(new_code_cell("%kale_run"))
    nbformat.write(new_notebook(cells=cells), str(path))


def timed(n: int, checkout: str | None) -> tuple[float, float]:
    """(wall, CPU) seconds of ``kale-magic run`` on a fresh N-step notebook; CPU counts the command and
    the step processes it waited for, which a busy machine does not inflate as it does the wall time."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "steps.ipynb"
        notebook(n, path)
        env = dict(os.environ)
        if checkout:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [checkout, env.get("PYTHONPATH")]))
        started, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
        result = subprocess.run([sys.executable, "-c", "from kale_magic.cli import main; main()", "run",
                                 str(path)], cwd=folder, env=env, capture_output=True, text=True)
        wall, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_CHILDREN)
        if result.returncode != 0:
            raise SystemExit(f"{n} steps failed:\n{result.stderr[-2000:]}{result.stdout[-2000:]}")
        return wall, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="200,2000")
    parser.add_argument("--baseline", help="another kale-magic checkout to run the same notebooks with")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    here = str(Path(__file__).resolve().parents[1])
    results = {}
    for label, checkout in [("this", here)] + ([("baseline", args.baseline)] if args.baseline else []):
        for n in sizes:
            wall, cpu = timed(n, checkout)
            results[f"{label} {n}"] = {"wall_s": round(wall, 2), "ms_per_step": round(1000 * wall / n, 1),
                                       "cpu_ms_per_step": round(1000 * cpu / n, 1)}
            print(f"{label:>8} {n:>5} steps: {wall:7.1f} s, {1000 * wall / n:6.1f} ms per step "
                  f"({1000 * cpu / n:.1f} ms CPU)", flush=True)
        first, last = results[f"{label} {sizes[0]}"], results[f"{label} {sizes[-1]}"]
        print(f"{label:>8}: per-step cost at {sizes[-1]} / at {sizes[0]} = "
              f"{last['ms_per_step'] / first['ms_per_step']:.2f} wall, "
              f"{last['cpu_ms_per_step'] / first['cpu_ms_per_step']:.2f} CPU", flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
