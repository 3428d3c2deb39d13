"""What moving a big array between two local steps costs, against a raw np.save + np.load, in one run.

    python benchmarks/bench_transfer.py              # 512 MiB float64 (the issue's size)
    python benchmarks/bench_transfer.py --small      # 64 MiB: a quick check

A real IPython shell with the extension loaded runs ``%kale_run`` on two
two-step pipelines that differ only in what flows: in one, step ``make``
hands its array to step ``use``; in the other it rebinds the name to a
10-element slice first.  The transfer cost is the difference of their wall
times (everything else, process start, building the array, the consumer's work,
is the same in both).  Goal (issue 16): <= 1.0x raw ``np.save`` + ``np.load`` of
the same array to the same disk, measured between the pipeline runs.  Runs are
interleaved and each starts with no dirty pages pending (``sync``); the best of
``--repeat`` is kept (medians too, for a noisy machine).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout, not an installed kale_magic

from bench_local_engine import kale_shell  # noqa: E402


def cells(elements: int, rebind: bool) -> list[str]:
    make = f"%%step make\narr = np.arange({elements}, dtype=np.float64)"
    if rebind:
        make += "\narr = arr[:10]"
    # the consumer reads a few elements: what it pays beyond that is the transfer
    return ["%%imports\nimport numpy as np", make, "%%step use --after make\nhead = float(arr[:10].sum())"]


def run_pipeline(shell, pipeline: list[str]) -> float:
    with contextlib.redirect_stdout(io.StringIO()):  # its one-line notice, once per round
        shell.run_line_magic("kale_reset", "")
    for i, cell in enumerate(pipeline):
        assert shell.run_cell(cell, cell_id=f"c{i}").success
    os.sync()
    with contextlib.redirect_stdout(io.StringIO()):  # the progress lines
        started = time.perf_counter()
        run = shell.run_line_magic("kale_run", "--no-snapshot --no-cache")
        wall = time.perf_counter() - started
    assert run.status == "succeeded", run.state.error
    assert run.load("head") == 45.0
    return wall


def raw_round_trip(path: Path, elements: int) -> float:
    import numpy as np

    arr = np.arange(elements, dtype=np.float64)
    os.sync()
    started = time.perf_counter()
    np.save(path, arr)
    loaded = np.load(path)
    seconds = time.perf_counter() - started
    assert float(loaded[:10].sum()) == 45.0
    path.unlink()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="64 MiB instead of 512 MiB")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    size = (64 if args.small else 512) << 20
    elements = size // 8
    home = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="kale-bench-transfer-", dir="/tmp") as tmp:
        shell = kale_shell(tmp)
        run_pipeline(shell, cells(10, rebind=False))  # start and warm the worker server
        flowing, rebound, raw = [], [], []
        for _ in range(args.repeat):
            flowing.append(run_pipeline(shell, cells(elements, rebind=False)))
            rebound.append(run_pipeline(shell, cells(elements, rebind=True)))
            raw.append(raw_round_trip(Path(tmp) / "raw.npy", elements))
        os.chdir(home)
    transfer = min(flowing) - min(rebound)
    median = statistics.median(flowing) - statistics.median(rebound)
    print(f"float64 array of {size >> 20} MiB through make -> use, best of {args.repeat} "
          f"(python {sys.version.split()[0]}, {os.cpu_count()} cores)")
    rows = [
        ("%kale_run, the array flows", min(flowing), ""),
        ("%kale_run, a 10-element slice flows", min(rebound), ""),
        ("transfer (difference)", transfer, f"{transfer / min(raw):.2f}x raw (goal <= 1.0x)"),
        ("raw np.save + np.load (baseline)", min(raw), ""),
        ("transfer, medians", median, f"{median / statistics.median(raw):.2f}x the median raw"),
    ]
    for name, seconds, note in rows:
        print(f"{name:<38} {seconds:7.3f} s   {note}")


if __name__ == "__main__":
    main()
