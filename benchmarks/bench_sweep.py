"""A 3×3 sweep whose shared preprocessing (a 2 s step) runs once, against 9 independent ``%kale_run``s.

    python benchmarks/bench_sweep.py [--prep 2.0] [--train 0.2]

A notebook: ``prep`` sleeps ``--prep`` seconds and reads no parameter; ``train`` reads ``lr`` and
``depth`` and sleeps ``--train`` seconds.  Measured in one process, each in a fresh folder (no
cache from before), on the local engine with its default ``Kale.max_parallel``:

* ``sweep``: ``%kale_run --sweep lr=… --sweep depth=…`` (9 points);
* ``sweep --no-cache``: the same, reusing nothing from before the sweep;
* ``9 runs, --no-cache``: the baseline a user writes without sweeps, a loop of ``%kale_run --param``;
* ``9 runs, cached``: the same loop with the step cache on (``prep`` reused from the first run).

Each line says how many times ``prep`` and ``train`` ran (a side-channel log outside the workspace).
"""

import argparse
import atexit
import contextlib
import json
import os
import tempfile
import time
from pathlib import Path

LRS, DEPTHS = (0.1, 0.01, 0.001), (3, 5, 7)


def shell_in(folder: Path):
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    os.chdir(folder)
    InteractiveShell.clear_instance()
    config = Config()
    config.HistoryManager.enabled = False
    config.Kale.panel = "text"
    shell = InteractiveShell.instance(config=config)
    shell.run_line_magic("load_ext", "kale_magic")
    return shell


def cells(shell, log: Path, prep: float, train: float) -> None:
    mark = f"open({str(log)!r}, 'a').write('{{}}\\n')"
    for source in ("%%imports\nimport time",
                   "%%parameters\nlr = 0.1\ndepth = 3",
                   f"%%step prep\n{mark.format('prep')}\ntime.sleep({prep})\ndata = list(range(1000))",
                   f"%%step train\n{mark.format('train')}\ntime.sleep({train})\nscore = sum(data) * lr + depth",
                   "%%metrics\nscore"):
        result = shell.run_cell(source, store_history=False)
        result.raise_error()


def measure(label: str, lines: list[str], prep: float, train: float) -> dict:
    here = os.getcwd()
    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder + "-executions.log")
        workspace = Path(folder) / "nb"
        workspace.mkdir()
        shell = shell_in(workspace)
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
            cells(shell, log, prep, train)
            log.unlink(missing_ok=True)  # the cells ran once in the kernel; count the pipeline's executions
            started = time.perf_counter()
            for line in lines:
                result = shell.run_line_magic("kale_run", line)
                result.wait()
                assert result.status == "succeeded", result
            wall = time.perf_counter() - started
        ran = log.read_text().split()
        log.unlink()
        shell.run_line_magic("unload_ext", "kale_magic")
        atexit.unregister(shell.atexit_operations)  # it would reset the shell in a folder gone by then
        os.chdir(here)
    row = {"wall_s": round(wall, 2), "prep_runs": ran.count("prep"), "train_runs": ran.count("train")}
    print(f"{label:<22} {wall:6.2f} s   prep ran {row['prep_runs']}×, train {row['train_runs']}×", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prep", type=float, default=2.0)
    parser.add_argument("--train", type=float, default=0.2)
    args = parser.parse_args()
    sweep = "--sweep lr=" + ",".join(map(str, LRS)) + " --sweep depth=" + ",".join(map(str, DEPTHS))
    loop = [f"--param lr={lr} --param depth={d}" for lr in LRS for d in DEPTHS]
    results = {
        "sweep": measure("sweep", [sweep], args.prep, args.train),
        "sweep --no-cache": measure("sweep --no-cache", [sweep + " --no-cache"], args.prep, args.train),
        "9 runs, --no-cache": measure("9 runs, --no-cache", [p + " --no-cache" for p in loop], args.prep, args.train),
        "9 runs, cached": measure("9 runs, cached", loop, args.prep, args.train),
    }
    base = results["9 runs, --no-cache"]["wall_s"]
    print(f"sweep / 9 runs --no-cache = {results['sweep']['wall_s'] / base:.2f}; "
          f"sweep / 9 runs cached = {results['sweep']['wall_s'] / results['9 runs, cached']['wall_s']:.2f}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
