"""Round-trip speed and memory of kale_magic.marshal against the raw libraries, measured in one run.

    python benchmarks/bench_marshal.py            # 1 GiB float64 array, 10M-row DataFrame (the issue's sizes)
    python benchmarks/bench_marshal.py --small    # 64 MiB array, 1M rows: a quick check

Goals (issue 3): array round trip <= 1.15x raw np.save + np.load and >= 3x faster than dill;
DataFrame round trip <= 1.25x raw pyarrow Parquet write + read and faster than to_pickle + read_pickle;
memory while saving < object size + 10% above the baseline.  Peak memory is the process RSS, sampled
every millisecond while saving, minus the RSS just before the save (the object already in memory).
Files go to a temporary directory under /tmp, removed at the end.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout, not an installed kale_magic

import numpy as np  # noqa: E402

from kale_magic import marshal  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


class PeakRSS:
    """Samples RSS in a thread while the block runs; ``extra`` is the peak above the RSS at entry."""

    def __enter__(self):
        gc.collect()
        self.start = self.peak = rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss())
        self.extra = self.peak - self.start


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def measure(cases, check, repeat):
    """Run the cases interleaved (so load drift on a shared machine hits all alike), keep the best times.

    ``cases`` is a list of (name, save, load); returns one row per case with the best save, load and
    round-trip times and the largest extra memory seen while saving.
    """
    samples = {name: [] for name, _, _ in cases}
    for _ in range(repeat):
        for name, save, load in cases:
            os.sync()  # each save starts with no dirty pages pending, so none pays for another's write-back
            with PeakRSS() as memory:
                t_save, _ = timed(save)
            t_load, value = timed(load)
            check(value)
            del value
            samples[name].append((t_save, t_load, memory.extra))
    return [{"name": name, "save": min(s for s, _, _ in runs), "load": min(l for _, l, _ in runs),
             "total": min(s + l for s, l, _ in runs), "extra": max(m for _, _, m in runs)}
            for name, runs in samples.items()]


def fsync_cost(path: Path) -> float:
    """What fsync-ing a file of this size costs here (marshal fsyncs; the raw baselines do not)."""
    data = path.read_bytes()
    probe = path.with_suffix(".fsync-probe")
    probe.write_bytes(data)
    del data
    fd = os.open(probe, os.O_RDONLY)
    seconds, _ = timed(lambda: os.fsync(fd))
    os.close(fd)
    probe.unlink()
    return seconds


def array_cases(tmp: Path, size_bytes: int, repeat: int):
    import dill

    arr = np.random.default_rng(0).random(size_bytes // 8)
    same = lambda out: np.testing.assert_array_equal(out, arr)
    raw, kale, pickled = tmp / "raw.npy", tmp / "kale_arr", tmp / "arr.dill"

    def dill_save():
        with open(pickled, "wb") as f:
            dill.dump(arr, f, protocol=5)

    def dill_load():
        with open(pickled, "rb") as f:
            return dill.load(f)

    rows = measure([
        ("np.save + np.load (raw)", lambda: np.save(raw, arr), lambda: np.load(raw)),
        ("kale marshal (numpy)", lambda: marshal.save(arr, kale), lambda: marshal.load(kale)),
        ("kale marshal, durable=False (no fsync)", lambda: marshal.save(arr, kale, durable=False),
         lambda: marshal.load(kale)),
        ("dill", dill_save, dill_load),
    ], same, repeat)
    return arr.nbytes, rows, fsync_cost(raw)


def make_frame(rows: int):
    import pandas as pd

    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "x": rng.random(rows),
        "n": rng.integers(0, 1_000_000, rows),
        "name": pd.array([f"user-{i % 100_000:06d}" for i in range(rows)], dtype="str"),
        "kind": pd.Categorical.from_codes(rng.integers(0, 5, rows), ["a", "b", "c", "d", "e"]),
    })


def frame_cases(tmp: Path, rows: int, repeat: int):
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    frame = make_frame(rows)
    same = lambda out: pd.testing.assert_frame_equal(out, frame, check_exact=True)
    raw, kale, pickled = tmp / "raw.parquet", tmp / "kale_frame", tmp / "frame.pkl"
    result = measure([
        ("pyarrow Parquet write + read (raw)", lambda: pq.write_table(pa.Table.from_pandas(frame), raw),
         lambda: pq.read_table(raw).to_pandas()),
        ("kale marshal (pandas)", lambda: marshal.save(frame, kale), lambda: marshal.load(kale)),
        ("kale marshal, durable=False (no fsync)", lambda: marshal.save(frame, kale, durable=False),
         lambda: marshal.load(kale)),
        ("to_pickle + read_pickle", lambda: frame.to_pickle(pickled), lambda: pd.read_pickle(pickled)),
    ], same, repeat)
    size = int(frame.memory_usage(deep=True).sum())
    return size, result, fsync_cost(raw)


def table(title, size, rows, fsync_seconds, goals):
    base = rows[0]["total"]
    print(f"\n{title}  (object {size / 2**20:,.0f} MiB in memory; fsync of the raw file here: {fsync_seconds:.2f} s)")
    print(f"{'':38} {'save s':>8} {'load s':>8} {'total s':>8} {'vs raw':>7} {'save mem +MiB':>14} {'% of size':>9}")
    for row in rows:
        print(f"{row['name']:38} {row['save']:8.2f} {row['load']:8.2f} {row['total']:8.2f} "
              f"{row['total'] / base:6.2f}x {row['extra'] / 2**20:14.1f} {100 * row['extra'] / size:8.1f}%")
    for label, limit, other in goals:
        for row, which in ((rows[1], "durable"), (rows[2], "durable=False")):
            ratio = row["total"] / other
            print(f"  goal: kale ({which}) {label}: {ratio:.2f}x  ({'met' if ratio <= limit else 'NOT met'})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="64 MiB array and 1M rows (quick check)")
    parser.add_argument("--repeat", type=int, default=None, help="runs per case, best kept (default 3, small 5)")
    parser.add_argument("--skip-frame", action="store_true")
    args = parser.parse_args()
    array_bytes, frame_rows = (64 << 20, 1_000_000) if args.small else (1 << 30, 10_000_000)
    repeat = args.repeat or (5 if args.small else 3)
    tmp = Path(tempfile.mkdtemp(prefix="kale-bench-", dir="/tmp"))
    try:
        size, rows, fsync_seconds = array_cases(tmp, array_bytes, repeat)
        table(f"float64 array, {array_bytes / 2**30:g} GiB", size, rows, fsync_seconds,
              [("/ raw np.save+np.load <= 1.15", 1.15, rows[0]["total"]),
               ("/ dill <= 1/3", 1 / 3, rows[3]["total"])])
        if not args.skip_frame:
            size, rows, fsync_seconds = frame_cases(tmp, frame_rows, repeat)
            table(f"DataFrame, {frame_rows:,} rows (float, int, str, categorical)", size, rows, fsync_seconds,
                  [("/ raw pyarrow Parquet <= 1.25", 1.25, rows[0]["total"]),
                   ("/ to_pickle+read_pickle < 1", 1.0, rows[3]["total"])])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
