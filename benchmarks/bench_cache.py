"""Step caching: a 10-step pipeline whose steps take ~1 s each, run three ways.

1. first run (every step executes: the baseline, measured in the same process),
2. re-run after editing the last step (targets: one step's time + at most 0.3 s),
3. re-run with nothing changed (target: under 0.3 s in total).

Driven through a real InteractiveShell with the extension loaded, like a notebook:
cells are recorded with ``delay = 0`` and the pipeline runs with ``--param delay=1``.

    python benchmarks/bench_cache.py [--steps 10] [--delay 1.0]
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))

UNCHANGED_GOAL = 0.3  # seconds, whole %kale_run
EDIT_OVERHEAD_GOAL = 0.3  # seconds above one step's time


def shell():
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    config = Config()
    config.HistoryManager.enabled = False
    ip = InteractiveShell(config=config)
    ip.run_line_magic("load_ext", "kale_magic")
    return ip


def record(ip, source: str, cell_id: str) -> None:
    result = ip.run_cell(source, store_history=False, cell_id=cell_id)
    if not result.success:
        raise SystemExit(f"cell {cell_id} failed")


def timed_run(ip, line: str):
    import contextlib
    import io

    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        run = ip.run_line_magic("kale_run", line)
    elapsed = time.perf_counter() - started
    if run.status != "succeeded":
        raise SystemExit(f"run failed: {run.state.error}")
    return elapsed, run


def main() -> int:
    import statistics

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--delay", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    os.chdir(tempfile.mkdtemp(prefix="bench-cache-"))
    ip = shell()
    record(ip, "%%imports\nimport time", "imports")
    record(ip, "%%parameters\ndelay = 0.0", "parameters")
    last = args.steps - 1
    for i in range(args.steps):
        body = "v0 = 0" if i == 0 else f"v{i} = v{i - 1} + 1"
        record(ip, f"%%step s{i}\ntime.sleep(delay)\n{body}", f"s{i}")
    timed_run(ip, "--no-cache")  # warm: worker server, nbformat, as after a user's first run
    line = f"--param delay={args.delay}"

    first, _ = timed_run(ip, line)
    step_time = first / args.steps
    edits, unchanged, executed, cached = [], [], set(), set()
    for r in range(args.repeat):
        record(ip, f"%%step s{last}\ntime.sleep(delay)\nv{last} = v{last - 1} + {100 + r}", f"s{last}")
        elapsed, run = timed_run(ip, line)
        edits.append(elapsed)
        executed.add(tuple(n for n, s in run.steps.items() if s.status == "succeeded"))
        elapsed, run = timed_run(ip, line)
        unchanged.append(elapsed)
        cached.add(sum(1 for s in run.steps.values() if s.status == "cached"))
    ip.magics_manager.registry["Kale"].workers.close()

    edit, same = statistics.median(edits), statistics.median(unchanged)
    overhead = edit - step_time
    print(f"{args.steps} steps sleeping {args.delay:.1f} s each (medians of {args.repeat})")
    print(f"  first run (baseline)      {first:7.3f} s  = {step_time:.3f} s per step")
    print(f"  after editing the last    {edit:7.3f} s  executed {sorted(executed)}; one step + {overhead:.3f} s "
          f"(goal <= {EDIT_OVERHEAD_GOAL} s); {first / edit:.1f}x faster")
    print(f"  nothing changed           {same:7.3f} s  cached {sorted(cached)} of {args.steps} "
          f"(goal < {UNCHANGED_GOAL} s); {first / same:.0f}x faster")
    ok = (same < UNCHANGED_GOAL and overhead <= EDIT_OVERHEAD_GOAL and executed == {(f"s{last}",)}
          and cached == {args.steps})
    print("goals met" if ok else "GOALS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
