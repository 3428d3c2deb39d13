"""Planning time with gigabytes in the namespace: %kale_run must not serialize to plan.

    python benchmarks/bench_planning.py [--gb 5] [--steps 20]

Builds a pipeline whose steps pass arrays totalling --gb GiB, then times the
planner (what %kale_run's Validate task does) against the baseline of merely
listing the namespace's sizes.
"""

import argparse
import statistics
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=5.0)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    import os

    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    os.chdir(tempfile.mkdtemp())
    config = Config()
    config.HistoryManager.enabled = False
    shell = InteractiveShell.instance(config=config)
    shell.run_line_magic("load_ext", "kale_magic")
    per_step = int(args.gb * 2**30 / args.steps / 8)
    shell.run_cell("%%imports\nimport numpy as np")
    for i in range(args.steps):
        prev = f"a{i - 1}" if i else "None"
        # np.empty: the arrays are in the namespace at full size without touching every page
        shell.run_cell(f"%%step s{i}\n_ = {prev}\na{i} = np.empty({per_step})", cell_id=f"c{i}")
    total = sum(shell.user_ns[f"a{i}"].nbytes for i in range(args.steps))
    magics = shell.magics_manager.registry["Kale"]
    times = []
    for _ in range(7):
        started = time.perf_counter()
        plan = magics.plan()
        times.append(time.perf_counter() - started)
    flows = sum(len(s.inputs) for s in plan.steps.values())
    started = time.perf_counter()
    sizes = sum(getattr(v, "nbytes", 0) for v in shell.user_ns.values())
    baseline = time.perf_counter() - started
    print(f"{args.steps} steps, {flows} values flowing, {total / 2**30:.1f} GiB of arrays in the namespace")
    print(f"planning (median of 7): {statistics.median(times) * 1000:.1f} ms   goal < 50 ms")
    print(f"baseline, summing nbytes over the namespace: {baseline * 1000:.2f} ms (sizes {sizes / 2**30:.1f} GiB)")


if __name__ == "__main__":
    main()
