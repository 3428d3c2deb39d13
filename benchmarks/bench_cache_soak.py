"""Cache soak: a notebook driven through many random edits, each run checked against a fresh ``--no-cache`` run.

The notebook and the edits are those of the property test (tests/cache_walk.py): a CSV read by
pandas, a Parquet file read by pyarrow's native reader, a helper module on an absolute sys.path
entry, a file read by a subprocess (the conservative key), a parameter, files no step reads and
same-content rewrites; each run with or without a snapshot.  Reports the edits, the runs, how many
steps the cache reused, every mismatch with the oracle, and the time of the cached runs against the
oracle's (the baseline, measured in the same run).

    python benchmarks/bench_cache_soak.py [--edits 1000] [--seed 1]
"""

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def edit(rng: random.Random):
    kind = rng.choice(("csv", "parquet", "helper", "notes", "param", "scratch", "touch"))
    numbers = [rng.randint(-1000, 1000) for _ in range(rng.randint(1, 6))]
    value = {"csv": numbers, "parquet": numbers, "helper": rng.randint(-9, 9), "param": rng.randint(-3, 3),
             "notes": "".join(rng.choice("abc") for _ in range(rng.randint(0, 5))),
             "scratch": "".join(rng.choice("xy") for _ in range(rng.randint(0, 4))), "touch": None}[kind]
    return kind, value, rng.random() < 0.5


def main() -> int:
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    from cache_walk import CacheWalk

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edits", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    config = Config()
    config.HistoryManager.enabled = False
    ip = InteractiveShell(config=config)
    ip.run_line_magic("load_ext", "kale_magic")
    rng = random.Random(args.seed)
    folder = Path(tempfile.mkdtemp(prefix="kale-soak-"))  # kept: 2 runs per edit are a lot to delete
    os.chdir(folder)
    walk = CacheWalk(ip, folder)
    walk.start()
    started = time.perf_counter()
    for number in range(1, args.edits + 1):
        kind, value, no_snapshot = edit(rng)
        walk.apply(kind, value)
        walk.check(no_snapshot)
        if number % 100 == 0:
            print(f"  {number} edits, {len(walk.tally.mismatches)} mismatches", flush=True)
    elapsed = time.perf_counter() - started
    t = walk.tally
    print(f"edits: {t.edits}   runs: {t.runs} (half of them the --no-cache oracle)   wall: {elapsed:.0f} s")
    print(f"steps in cached runs: {t.reused} reused, {t.executed} executed "
          f"({t.reused / max(1, t.reused + t.executed):.0%} reused)")
    print(f"time per run: cached {t.cached_seconds / (t.runs / 2):.2f} s, oracle (--no-cache, baseline) "
          f"{t.fresh_seconds / (t.runs / 2):.2f} s")
    print(f"mismatches with the oracle: {len(t.mismatches)}")
    for line in t.mismatches[:20]:
        print("  " + line)
    print(f"(the folder with its runs: {folder}; delete it when done)", flush=True)
    return 1 if t.mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
