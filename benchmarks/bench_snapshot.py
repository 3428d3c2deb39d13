"""Snapshot speed against ``cp -r`` of the same tree on the same disk, in the same run.

Targets (issue 6): first snapshot <= 1.5x ``cp -r``; unchanged re-snapshot < 1 s;
re-snapshot after changing one file < 1 s + that file's hashing time.

    python benchmarks/bench_snapshot.py            # 1 GiB in 2,000 files
    python benchmarks/bench_snapshot.py --small    # 64 MiB in 500 files

The tree is generated under a temporary folder (``--dir``, default /tmp) and
removed afterwards.  Its files are dated an hour back, as a user's files usually
are: files modified in the last second are always re-hashed (the "racy" rule).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kale_magic.files import file_digest, human_size  # noqa: E402
from kale_magic.snapshot import materialize, take_snapshot  # noqa: E402


def generate(root: Path, total: int, count: int, seed: int = 6) -> list[Path]:
    """A mix like a data-science workspace: a few large data files, many small ones."""
    rng = random.Random(seed)
    large = max(1, count // 200)
    sizes = [total // 2 // large] * large
    small = (total - sum(sizes)) // (count - large)
    sizes += [max(1, int(small * rng.uniform(0.5, 1.5))) for _ in range(count - large)]
    old = time.time() - 3600
    paths = []
    for index, size in enumerate(sizes):
        path = root / f"dir{index % 20:02d}" / f"file{index:05d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))
        os.utime(path, (old, old))
        paths.append(path)
    return paths


def timed(fn) -> float:
    subprocess.run(["sync"], check=True)  # start each measurement with no dirty pages pending
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="64 MiB in 500 files")
    parser.add_argument("--dir", default=None, help="where to generate the tree (default: /tmp)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="median of N runs for cp -r and the first snapshot (this disk is noisy)")
    args = parser.parse_args()
    total, count = (64 << 20, 500) if args.small else (1 << 30, 2000)

    base = Path(tempfile.mkdtemp(prefix="kale-bench-snapshot-", dir=args.dir))
    try:
        root = base / "ws"
        print(f"generating {human_size(total)} in {count} files under {root} ...", flush=True)
        paths = generate(root, total, count)

        copies, firsts = [], []
        for attempt in range(args.repeat):
            copy = base / f"copy{attempt}"
            copies.append(timed(lambda copy=copy: subprocess.run(["cp", "-r", str(root), str(copy)], check=True)))
            shutil.rmtree(copy)
            store = base / f"store{attempt}"
            firsts.append(timed(lambda store=store: take_snapshot(root, store, max_bytes=None)))
            if attempt < args.repeat - 1:
                shutil.rmtree(store)
        cp_time, first = statistics.median(copies), statistics.median(firsts)
        print("cp -r:", " ".join(f"{t:.3f}" for t in copies), " snapshot:", " ".join(f"{t:.3f}" for t in firsts))

        unchanged = timed(lambda: take_snapshot(root, store, max_bytes=None))

        changed = paths[len(paths) // 2]
        changed_size = changed.stat().st_size
        changed.write_bytes(os.urandom(changed_size))
        hash_time = timed(lambda: file_digest(changed))
        one_changed = timed(lambda: take_snapshot(root, store, max_bytes=None))

        snapshot = take_snapshot(root, store, max_bytes=None)
        link_time = timed(lambda: materialize(store, snapshot.id, base / "materialized"))
    finally:
        shutil.rmtree(base, ignore_errors=True)

    rows = [
        ("cp -r (baseline, median)", cp_time, ""),
        ("first snapshot (median)", first, f"{first / cp_time:.2f}x cp -r (target <= 1.5x)"),
        ("first snapshot (best of each)", min(firsts), f"{min(firsts) / min(copies):.2f}x the best cp -r "
                                                       f"({min(copies):.3f} s; a shared machine's floor)"),
        ("unchanged re-snapshot", unchanged, "target < 1 s"),
        (f"one file changed ({human_size(changed_size)})", one_changed,
         f"target < 1 s + hashing it ({hash_time:.4f} s)"),
        ("materialize (hard links)", link_time, ""),
    ]
    print(f"\nworkspace: {human_size(total)} in {count} files")
    for label, seconds, note in rows:
        print(f"{label:<34} {seconds:8.3f} s   {note}")
    verdicts = [first <= 1.5 * cp_time, unchanged < 1.0, one_changed < 1.0 + hash_time]
    print("targets met" if all(verdicts) else "TARGETS MISSED: " + ", ".join(
        name for name, ok in zip(("first snapshot", "unchanged", "one changed"), verdicts, strict=True) if not ok))
    return 0 if all(verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
