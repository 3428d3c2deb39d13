"""Output capture: one step printing 5 MB and 50 MB, against the same step printing nothing.

The step prints ``MB`` megabytes as lines of ``--width`` characters.  Each figure
is the step's duration as the run records it (its process, its notebook and log
written), the median of ``--repeat`` runs; the extra time over the run printing
nothing is what capturing the output costs, including Python's own ``print``.
For scale, the same loop in a plain ``python`` process writing to a file is
measured too.  Goal: at most 1 s extra per 50 MB.

    python benchmarks/bench_output.py [--repeat 3] [--width 100]
"""

import argparse
import contextlib
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))

GOAL = 1.0  # seconds extra per 50 MB
FLOOD = "line = 'x' * (width - 1)\nfor _ in range(mb * 1_000_000 // width):\n    print(line)"


def shell():
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    config = Config()
    config.HistoryManager.enabled = False
    ip = InteractiveShell(config=config)
    ip.run_line_magic("load_ext", "kale_magic")
    for i, cell in enumerate(["%%parameters\nmb = 0\nwidth = 100", "%%step flood\n" + FLOOD]):
        if not ip.run_cell(cell, store_history=False, cell_id=f"c{i}").success:
            raise SystemExit(f"cell {i} failed")
    return ip


def step_time(ip, mb: int, width: int) -> tuple[float, int]:
    """(the step's duration, the size of its log) for one run printing ``mb`` MB."""
    with contextlib.redirect_stdout(io.StringIO()):
        run = ip.run_line_magic("kale_run", f"--no-snapshot --no-cache --param mb={mb} --param width={width}")
    if run.status != "succeeded":
        raise SystemExit(f"run failed: {run.state.error}")
    return run.state.steps["flood"].duration, (run.run_dir / "logs" / "flood.log").stat().st_size


def plain_python(mb: int, width: int, folder: str) -> float:
    """The same loop in a fresh interpreter writing to a file: what printing costs without kale-magic."""
    code = f"import time\nt = time.perf_counter()\nmb, width = {mb}, {width}\n{FLOOD}\n" \
           "import sys; print(time.perf_counter() - t, file=sys.stderr)"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # Python's default buffering
    with open(os.path.join(folder, "plain.log"), "w") as out:
        done = subprocess.run([sys.executable, "-c", code], stdout=out, stderr=subprocess.PIPE, text=True,
                              check=True, env=env)
    return float(done.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--width", type=int, default=100, help="characters per printed line, newline included")
    args = parser.parse_args()
    home = os.getcwd()
    with tempfile.TemporaryDirectory() as folder:
        os.chdir(folder)
        ip = shell()
        step_time(ip, 0, args.width)  # warm the worker
        times = {}
        for mb in (0, 5, 50):
            runs = [step_time(ip, mb, args.width) for _ in range(args.repeat)]
            times[mb] = statistics.median(t for t, _ in runs)
            print(f"step printing {mb:>2} MB: {times[mb]:.3f} s (log {runs[-1][1] / 1e6:.1f} MB)")
        plain = {mb: statistics.median(plain_python(mb, args.width, folder) for _ in range(args.repeat))
                 for mb in (5, 50)}
        ip.run_line_magic("unload_ext", "kale_magic")
        os.chdir(home)
    for mb in (5, 50):
        extra = times[mb] - times[0]
        print(f"extra for {mb:>2} MB: {extra:.3f} s ({extra * 50 / mb:.3f} s per 50 MB); "
              f"plain python printing it to a file: {plain[mb]:.3f} s")
    extra = (times[50] - times[0])
    verdict = "met" if extra <= GOAL else "MISSED"
    print(f"goal <= {GOAL} s extra per 50 MB: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
