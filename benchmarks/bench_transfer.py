"""What moving a big value between two local steps costs, against the raw library round trip, per memory state.

    python benchmarks/bench_transfer.py                    # every kind, every state (needs root to drop caches)
    python benchmarks/bench_transfer.py --small            # smaller values: a quick check
    python benchmarks/bench_transfer.py --kinds array --states after --repeat 3

Values (``--kinds``), each against its raw round trip in the benchmark's own process:

* ``array``: a 512 MiB float64 array; raw ``np.save`` + ``np.load``;
* ``frame``: a 5M-row DataFrame (float, int, str, categorical); raw pyarrow Parquet write + read;
* ``dict``: a dict of 10,000 arrays of 1,000 float64; raw ``np.savez`` + ``np.load`` of every member.

A real IPython shell with the extension loaded runs ``%kale_run`` on two two-step
pipelines that differ only in what flows: in one, step ``make`` hands the value to
step ``use``; in the other it rebinds the flowing name to a small part of it (a view
that keeps the array's or frame's memory alive; the dict's other arrays are freed).  The transfer cost is the difference of the two, measured twice:
as the runs' wall times, and as the time from the end of ``make``'s code to the start
of ``use``'s code (saving, the producer's exit, the consumer's start, loading), which
leaves out building the value, the noisiest part on a loaded machine.
Goal (issue 26): the transfer costs <= 1.0x the raw round trip in every state.

Memory states (``--states``), because on a virtual machine whose free memory is
handed back to the host (free page reporting) the first touch of a page costs far
more than its copy, and which pages a write gets depends on what memory holds:

* ``empty``: page cache nearly empty: ``sync`` and ``drop_caches`` before every measurement (root);
* ``full``: page cache full of unrelated files: ~70 % of RAM written and read back once
  before the state's measurements, in a temporary folder removed right after them;
* ``after``: right after the previous run's values (nothing dropped or filled between runs).

Within a state the three measurements (value flows, name rebound, raw) are
interleaved, each preceded by ``os.sync()`` so none pays for another's write-back,
and medians are reported, with the load average, free memory and page cache at the
state's start and end (the machine may be shared: another user's cache drop or fill
changes the state).  ``--counters`` adds the median /proc/vmstat deltas (reclaim,
compaction, huge pages, page faults, cache drops) of each measurement.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout, not an installed kale_magic

from bench_local_engine import kale_shell  # noqa: E402

COUNTERS = ("pgfault", "pgmajfault", "pgscan_direct", "pgscan_kswapd", "pgsteal_direct", "pgsteal_kswapd",
            "allocstall_normal", "allocstall_movable", "compact_stall", "compact_success", "compact_fail",
            "thp_fault_alloc", "thp_fault_fallback", "workingset_refault_file",
            "drop_pagecache")  # the last: someone dropped the page cache mid-measurement (the machine may be shared)
REPORTED = Path("/sys/module/page_reporting/parameters/reported_kib")  # free page reporting, where the kernel has it
FILL_CHUNK = 64 << 20


# the values -------------------------------------------------------------------------------------

class Kind:
    """One kind of value: the cells that build and consume it, and its raw round trip."""

    name = ""
    imports = "import numpy as np"

    def __init__(self, small: bool):
        self.small = small

    def build(self) -> str:  # the expression building the value, in the step and in raw()
        raise NotImplementedError

    def part(self) -> str:  # the small part of ``value`` that flows in the rebound pipeline (a view where it can)
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def value(self):
        """The value, built in this process as the step builds it."""
        namespace = {}
        exec(self.imports, namespace)
        return eval(self.build(), namespace)

    def cells(self, rebind: bool) -> list[str]:
        make = f"%%step make\nvalue = {self.build()}"
        if rebind:  # no other name may hold the value: kale would save it too, for run.load
            make += f"\nvalue = {self.part()}"
        make += "\nmade = time.time()"
        # the consumer only takes the length: what it pays beyond that is the transfer
        return [f"%%imports\nimport time\n{self.imports}", make,
                "%%step use --after make\nhead = len(value)\nhandoff = time.time() - made"]

    def raw(self, folder: Path) -> float:
        raise NotImplementedError


class ArrayKind(Kind):
    name = "array"

    def build(self):
        return f"np.arange({(64 if self.small else 512) << 17}, dtype=np.float64)"

    def part(self):
        return "value[:10]"

    def describe(self):
        return f"float64 array of {64 if self.small else 512} MiB; raw np.save + np.load"

    def raw(self, folder):
        import numpy as np

        value = self.value()
        path = folder / "raw.npy"
        os.sync()
        started = time.perf_counter()
        np.save(path, value)
        loaded = np.load(path)
        seconds = time.perf_counter() - started
        assert len(loaded) == len(value)
        path.unlink()
        return seconds


class FrameKind(Kind):
    name = "frame"
    imports = "import numpy as np\nimport pandas as pd"

    def rows(self):
        return 500_000 if self.small else 5_000_000

    def build(self):
        rows = self.rows()
        return ("(lambda rng: pd.DataFrame({"
                f"'x': rng.random({rows}), 'n': rng.integers(0, 1_000_000, {rows}), "
                f"'name': pd.array(np.array([f'user-{{i:06d}}' for i in range(100_000)])[np.arange({rows}) % 100_000], "
                "dtype='str'), "
                f"'kind': pd.Categorical.from_codes(rng.integers(0, 5, {rows}), list('abcde'))}}))"
                "(np.random.default_rng(0))")

    def part(self):
        return "value.iloc[:10]"

    def describe(self):
        return f"DataFrame of {self.rows():,} rows (float, int, str, categorical); raw pyarrow Parquet"

    def raw(self, folder):
        import pyarrow as pa
        import pyarrow.parquet as pq

        value = self.value()
        path = folder / "raw.parquet"
        os.sync()
        started = time.perf_counter()
        pq.write_table(pa.Table.from_pandas(value), path)
        loaded = pq.read_table(path).to_pandas()
        seconds = time.perf_counter() - started
        assert len(loaded) == len(value)
        path.unlink()
        return seconds


class DictKind(Kind):
    name = "dict"

    def count(self):
        return 1_000 if self.small else 10_000

    def build(self):
        return f"{{f'a{{i}}': np.full(1_000, i, dtype=np.float64) for i in range({self.count()})}}"

    def part(self):
        return "dict(list(value.items())[:10])"

    def describe(self):
        return f"dict of {self.count():,} float64 arrays of 1,000 elements; raw np.savez + np.load of every member"

    def raw(self, folder):
        import numpy as np

        value = self.value()
        path = folder / "raw.npz"
        os.sync()
        started = time.perf_counter()
        np.savez(path, **value)
        with np.load(path) as archive:
            loaded = {name: archive[name] for name in archive.files}
        seconds = time.perf_counter() - started
        assert len(loaded) == len(value)
        path.unlink()
        return seconds


KINDS = {kind.name: kind for kind in (ArrayKind, FrameKind, DictKind)}


# the memory states ------------------------------------------------------------------------------

def drop_caches() -> None:
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def meminfo() -> dict[str, int]:
    """/proc/meminfo in bytes."""
    with open("/proc/meminfo") as f:
        return {line.split(":")[0]: int(line.split()[1]) << 10 for line in f}


def mem_total() -> int:
    return meminfo()["MemTotal"]


def memory_now() -> str:
    """Free memory and page cache now: whether the state is the one named (others may drop or fill caches)."""
    info = meminfo()
    return f"{info['MemFree'] / 2**30:.1f} GiB free, {info['Cached'] / 2**30:.1f} GiB page cache"


@contextlib.contextmanager
def filled_page_cache(fraction: float):
    """~``fraction`` of RAM in unrelated files, written and read back; the folder is removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="kale-bench-fill-", dir="/tmp"))
    try:
        chunk = os.urandom(1 << 20) * (FILL_CHUNK >> 20)  # not zeros: nothing below may skip them
        files = []
        for i in range(int(mem_total() * fraction) // FILL_CHUNK):
            path = folder / f"fill-{i:04d}"
            path.write_bytes(chunk)
            files.append(path)
        del chunk
        os.sync()
        for path in files:
            with open(path, "rb", buffering=0) as f:
                while f.read(FILL_CHUNK):
                    pass
        yield
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# measuring --------------------------------------------------------------------------------------

def vmstat() -> dict[str, int]:
    with open("/proc/vmstat") as f:
        values = dict(line.split() for line in f)
    counters = {name: int(values.get(name, 0)) for name in COUNTERS}
    if REPORTED.exists():
        counters["reported_kib"] = int(REPORTED.read_text())
    return counters


def run_pipeline(shell, cells: list[str]) -> tuple[float, float]:
    """(wall time of %kale_run, seconds from the end of make's code to the start of use's code)."""
    with contextlib.redirect_stdout(io.StringIO()):  # its one-line notice, once per round
        shell.run_line_magic("kale_reset", "")
    for i, cell in enumerate(cells):
        assert shell.run_cell(cell, cell_id=f"c{i}").success
    os.sync()
    with contextlib.redirect_stdout(io.StringIO()):  # the progress lines
        started = time.perf_counter()
        run = shell.run_line_magic("kale_run", "--no-snapshot --no-cache")
        wall = time.perf_counter() - started
    assert run.status == "succeeded", run.state.error
    assert run.load("head") > 0
    return wall, run.load("handoff")


def measure_state(shell, state: str, kinds: list[Kind], repeat: int, folder: Path, counters: bool,
                  samples_too: bool) -> None:
    load_before, memory_before = os.getloadavg(), memory_now()
    variants = {"flows": lambda kind: run_pipeline(shell, kind.cells(rebind=False)),
                "rebound": lambda kind: run_pipeline(shell, kind.cells(rebind=True)),
                "raw": lambda kind: (kind.raw(folder), None)}
    samples = {kind.name: {variant: [] for variant in variants} for kind in kinds}
    deltas = {kind.name: {variant: [] for variant in variants} for kind in kinds}
    for _ in range(repeat):
        for kind in kinds:
            for variant, measure in variants.items():
                if state == "empty":
                    drop_caches()
                before = vmstat()
                samples[kind.name][variant].append(measure(kind))
                after = vmstat()
                deltas[kind.name][variant].append({k: after[k] - before[k] for k in after})
    load_after, memory_after = os.getloadavg(), memory_now()
    print(f"\nstate '{state}': median of {repeat}, load average {load_before[0]:.1f} -> {load_after[0]:.1f} "
          f"(1 min), {load_before[1]:.1f} -> {load_after[1]:.1f} (5 min); memory at the start {memory_before}, "
          f"at the end {memory_after}")
    for kind in kinds:
        runs = samples[kind.name]
        median = lambda variant, i: statistics.median(sample[i] for sample in runs[variant])
        raw = median("raw", 0)
        print(f"  {kind.describe()}: raw {raw:.3f} s")
        for label, i in (("%kale_run wall", 0), ("make's end -> use's start", 1)):
            flows, rebound = median("flows", i), median("rebound", i)
            transfer = flows - rebound
            print(f"    {label:26} value flows {flows:7.3f} s, name rebound {rebound:7.3f} s: "
                  f"transfer {transfer:6.3f} s = {transfer / raw:5.2f}x raw (goal <= 1.0x)")
        if samples_too:
            for variant in variants:
                shown = "  ".join("/".join(f"{x:.2f}" for x in sample if x is not None) for sample in runs[variant])
                print(f"      samples {variant:8} {shown}")
        if counters:
            for variant in variants:
                medians = {k: statistics.median(d[k] for d in deltas[kind.name][variant])
                           for k in deltas[kind.name][variant][0]}
                shown = ", ".join(f"{k} {v:g}" for k, v in medians.items() if v)
                print(f"      vmstat {variant:8} {shown}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="64 MiB, 500,000 rows, 1,000 arrays")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--kinds", default="array,frame,dict")
    parser.add_argument("--states", default="empty,full,after")
    parser.add_argument("--fill", type=float, default=0.7, help="fraction of RAM the 'full' state fills")
    parser.add_argument("--counters", action="store_true", help="median /proc/vmstat deltas per measurement")
    parser.add_argument("--samples", action="store_true", help="every measurement (wall/handoff), not only medians")
    args = parser.parse_args()
    # a kill (not only Ctrl-C) unwinds too, so the 'full' state's ~16 GiB of files never stay on disk
    for ending in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(ending, lambda number, frame: sys.exit(128 + number))
    kinds = [KINDS[name](args.small) for name in args.kinds.split(",")]
    states = args.states.split(",")
    if "empty" in states and os.geteuid() != 0:
        print("state 'empty' skipped: dropping the page cache needs root")
        states.remove("empty")
    home = os.getcwd()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, {mem_total() / 2**30:.1f} GiB RAM")
    with tempfile.TemporaryDirectory(prefix="kale-bench-transfer-", dir="/tmp") as tmp:
        shell = kale_shell(tmp)
        try:
            for kind in kinds:  # start and warm the worker server with the kinds' imports
                run_pipeline(shell, kind.cells(rebind=True))
            for state in states:
                fill = filled_page_cache(args.fill) if state == "full" else contextlib.nullcontext()
                with fill:
                    measure_state(shell, state, kinds, args.repeat, Path(tmp), args.counters, args.samples)
        finally:
            os.chdir(home)  # before the folder goes (IPython's exit hooks run in the current folder)


if __name__ == "__main__":
    main()
