"""What a partial run saves on the demo pipeline (demo_notebooks/quickstart.ipynb), same-run baseline the
full run.

    python benchmarks/bench_partial.py [--repeat 5] [--param n=2000000]

The quickstart's cells run once in a real IPython shell in this process (as a user runs them), then
``%kale_run --no-cache`` (every step executes: the baseline) alternates with the partial runs a user
makes while iterating on one step — ``--only stats``, ``--from report``, ``--to clean`` — each also with
``--no-cache`` so that what is selected executes and what is not is reused from an earlier run.  The
figure is the median wall time of ``%kale_run`` (validate, snapshot, compile, run, record) per variant
and its ratio to the full run's median from the same rounds.
"""

import argparse
import contextlib
import io
import json
import statistics
import tempfile
import time
from pathlib import Path

DEMO = Path(__file__).resolve().parents[1] / "demo_notebooks" / "quickstart.ipynb"
VARIANTS = ("", "--only stats", "--from report", "--to clean")


def demo_cells() -> list[str]:
    """The quickstart's code cells before its first %kale_run (which the benchmark makes itself)."""
    import nbformat

    cells = []
    for cell in nbformat.read(str(DEMO), as_version=4).cells:
        if cell.cell_type != "code":
            continue
        if "%kale_run" in cell.source:
            break
        if not cell.source.startswith(("%kale_show", "%load_ext")):
            cells.append(cell.source)
    return cells


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--param", default="", help="a --param for every run, e.g. n=2000000 (heavier steps)")
    args = parser.parse_args()
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    config = Config()
    config.HistoryManager.enabled = False
    with tempfile.TemporaryDirectory() as folder, contextlib.chdir(folder):
        shell = InteractiveShell.instance(config=config)
        shell.run_line_magic("load_ext", "kale_magic")
        shell.run_line_magic("config", "Kale.panel = 'text'")
        for source in demo_cells():
            result = shell.run_cell(source)
            if not result.success:
                raise SystemExit(f"the demo's cell failed: {source[:60]!r}")
        param = f" --param {args.param}" if args.param else ""
        times: dict[str, list[float]] = {v: [] for v in VARIANTS}
        executed: dict[str, int] = {}
        with contextlib.redirect_stdout(io.StringIO()):
            shell.run_line_magic("kale_run", "--no-cache" + param)  # warm: the worker, the imports
            for _ in range(args.repeat):
                for variant in VARIANTS:
                    started = time.perf_counter()
                    run = shell.run_line_magic("kale_run", f"--no-cache{param} {variant}")
                    times[variant].append(time.perf_counter() - started)
                    assert run.status == "succeeded", run.state.error
                    executed[variant] = sum(1 for s in run.steps.values() if s.status == "succeeded")
    full = statistics.median(times[""])
    results = {}
    for variant in VARIANTS:
        median = statistics.median(times[variant])
        label = variant or "full run (baseline)"
        results[label] = {"median_s": round(median, 3), "ratio": round(median / full, 2),
                          "steps_executed": executed[variant]}
        print(f"{label:<22} {median:6.3f} s  {median / full:5.2f}x of the full run  "
              f"({executed[variant]} of 4 steps executed)")
    print(json.dumps({"repeat": args.repeat, "param": args.param, "results": results}))


if __name__ == "__main__":
    main()
