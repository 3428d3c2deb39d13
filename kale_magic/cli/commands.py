"""The ``kale-magic`` command: run, compile and convert notebooks without a frontend.

Each subcommand is a small function taking the parsed arguments and returning
the exit status.  User mistakes surface as :class:`KaleError` and are printed as
one line on stderr; bugs keep their traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import KaleError
from ..ipynb import NotebookFileError, as_nbformat, read_notebook, write_notebook

SUCCESS = ("succeeded", "compiled", "uploaded")  # a --compile-only or --upload-only run did what it was asked


def annotated_notebook(path: str | Path):
    """The notebook at ``path`` with our magics, converting Kale's tags in memory if it has them."""
    from ..source.convert import convert, is_kale_notebook

    nb = read_notebook(path)
    if not is_kale_notebook(nb):
        return nb
    result = convert(nb)
    for note in result.notes:
        print(f"kale-magic: {path}: {note}", file=sys.stderr)
    return result.notebook


# subcommands ----------------------------------------------------------------
def cmd_convert(args) -> int:
    from ..source.convert import convert

    result = convert(read_notebook(args.notebook))  # no nbformat: importing it costs seconds (ipynb.py)
    output = Path(args.output) if args.output else _default_converted_path(Path(args.notebook))
    write_notebook(result.notebook, output)
    for note in result.notes:
        print(f"kale-magic: {args.notebook}: {note}", file=sys.stderr)
    print(f"wrote {output}")
    return 0


def cmd_run(args) -> int:
    path = Path(args.notebook)
    if args.output and not args.execute_notebook:
        raise NotebookFileError("--output saves the notebook --execute-notebook executed; add --execute-notebook.")
    nb = annotated_notebook(path)
    if not args.execute_notebook:
        from .pipeline import run_pipeline

        runs, stops = run_pipeline(nb, path.resolve(), _run_options(args))
        return _verdict(path, [(run.id, run.status, stops) for run in runs])
    from . import headless

    nb = headless.prepare(as_nbformat(nb), _run_line(args))
    execution = headless.execute(nb, path.resolve().parent, env=_kernel_env(path))
    if args.output:
        write_notebook(execution.notebook, args.output)
    if execution.error:
        print(f"kale-magic: {path}: {execution.error}", file=sys.stderr)
        return 1
    return _verdict(path, [(run.id, run.status, run.stops) for run in execution.runs])


def _verdict(path: Path, runs: list[tuple[str, str, bool]]) -> int:
    """0 when every run (id, status, whether its failure stops the notebook) did what it was asked or
    failed where the notebook says to go on (``Kale.stop_on_failure = False``); else 1.  One line per run
    that did not succeed; its error is not repeated: its progress, printed above, already says it."""
    for run_id, status, stops in runs:
        if status not in SUCCESS:
            went_on = "" if stops else "; the notebook went on (Kale.stop_on_failure = False)"
            print(f"kale-magic: {path}: run {run_id} {status} (its error is printed above){went_on}",
                  file=sys.stderr)
    if not runs:
        print(f"kale-magic: {path}: no %kale_run returned a run.", file=sys.stderr)
    return 0 if runs and all(status in SUCCESS or not stops for _, status, stops in runs) else 1


def _run_options(args) -> dict:
    """The ``%kale_run`` options the command line gives: option name -> value (``param``: a list)."""
    options = {flag: getattr(args, flag) for flag in ("experiment", "pipeline", "description", "engine", "host")
               if getattr(args, flag)}
    options.update({flag: True for flag in ("compile_only", "no_cache", "no_snapshot") if getattr(args, flag)})
    options.update({flag: getattr(args, flag) for flag in ("only", "from_step", "to_step") if getattr(args, flag)})
    for flag in ("param", "sweep"):
        if getattr(args, flag):
            options[flag] = list(getattr(args, flag))
    return options


def _step_names(text: str) -> tuple[str, ...]:
    """``--only a,b`` as ``%kale_run`` reads it."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _run_line(args) -> str:
    """The same options as ``%kale_run`` text, for the notebook a kernel executes (--execute-notebook)."""
    from ..source.convert import magic_arguments

    words = []
    for name, value in _run_options(args).items():
        flag = "--" + name.replace("_", "-")
        flag = {"--from-step": "--from", "--to-step": "--to"}.get(flag, flag)
        if value is True:
            words.append(flag)
        elif name == "only":
            words += [flag, ",".join(value)]
        elif name in ("param", "sweep"):
            words += [word for item in value for word in (flag, item)]
        else:
            words += [flag, value]
    return magic_arguments(words)


def _kernel_env(path: Path) -> dict:
    """The kernel learns which notebook it runs the way Jupyter tells it (``__session__``)."""
    import os

    return {**os.environ, "JPY_SESSION_NAME": str(path.resolve())}


def _plan_file(path: Path, pipeline: str | None = None, params: list[str] = ()):
    """The plan of the notebook file at ``path`` from its sources (``params``: NAME=VALUE texts), its
    ``%config Kale.*`` settings and the warnings of cells whose names only show when they run."""
    from ..source.static import static_plan

    return static_plan(annotated_notebook(path), path.resolve(), pipeline=pipeline, params=params)


def cmd_runs(args) -> int:
    from ..history.views import runs_view

    with _store(args.dir) as store:
        compare = tuple(args.compare) if args.compare else None
        print(repr(runs_view(store, experiment=args.experiment, last=args.last, compare=compare,
                             sweep=args.sweep, plot=args.plot, by=args.by)))
    return 0


def cmd_show(args) -> int:
    from ..layout import KaleDir

    with _store(args.dir) as store:
        record = store.get(args.run_id)
    print(run_text(record))
    files = step_files(KaleDir(args.dir).run(record.run_id), [step.name for step in record.steps])
    if files:
        print("  files:")
        print("\n".join(f"    {line}" for line in files))
    return 0


def step_files(run_dir, steps: list[str]) -> list[str]:
    """Each step's executed notebook and log, where the run wrote them (a KFP run keeps them in the cluster)."""
    from ..layout import RunDir

    lines = []
    width = max((len(name) for name in steps), default=0)
    for name in steps:
        found = [f"{label} {path}" for label, path in (("notebook", RunDir.executed(run_dir, name)),
                                                         ("log", RunDir.log(run_dir, name))) if path.exists()]
        if found:
            lines.append(f"{name:<{width}}  " + "  ".join(found))
    return lines


def cmd_cache(args) -> int:
    from ..cache import clear, holdings
    from ..layout import KaleDir

    kale = KaleDir(args.dir)
    print(clear(kale, older_than=args.older_than) if args.clear else holdings(kale))
    return 0


def _store(directory: str):
    """The run store of the notebooks in ``directory``; reading never creates one."""
    from ..history.store import RunStore
    from ..layout import KaleDir

    path = KaleDir(directory).runs_db
    if not path.is_file():
        raise NotebookFileError(f"no runs recorded in {directory} (no {path}); run a notebook there "
                                f"first, or pass --dir with the notebook's folder.")
    return RunStore(path)


def run_text(record) -> str:
    """One stored run as text: what ran, with which parameters, how each step went."""
    import time

    from ..text import printable

    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.started))
    took = f", {record.duration:.1f} s" if record.duration is not None else ""
    lines = [f"Run {record.run_id}: {record.status}",
             f"  pipeline {record.pipeline}, experiment {record.experiment}, {record.engine} engine",
             f"  started {when}{took}"]
    for title, values in (("parameters", record.parameters), ("metrics", record.metrics)):
        if values:
            lines.append(f"  {title}: " + ", ".join(f"{k}={v!r}" for k, v in values.items()))
    if record.steps:
        width = max(len(step.name) for step in record.steps)
        lines.append("  steps:")
        for step in record.steps:
            took = f"{step.duration:.2f} s" if step.duration is not None else "-"
            note = f"  (from {step.cached_from})" if step.cached_from else ""
            note += f"  {step.message}" if step.message else ""
            lines.append(f"    {step.name:<{width}}  {step.status:<9}  {took:>8}{note}")
    if record.links:
        lines.append("  links:")
        lines += [f"    {label}: {target}" for label, target in record.links.items()]
    if record.error:
        lines.append(f"  error: {record.error}")
    return printable("\n".join(lines), lines=True)  # for a terminal: control characters escaped


def _default_converted_path(path: Path) -> Path:
    return path.with_name(f"{path.stem}.magic{path.suffix or '.ipynb'}")


# parser ---------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from .. import engines

    parser = argparse.ArgumentParser(
        prog="kale-magic",
        description="Run, compile and convert notebooks annotated with kale-magic's cell magics "
                    "(or Kale's cell tags) without a Jupyter frontend.")
    parser.add_argument("--version", action="version", version=f"kale-magic {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    convert = sub.add_parser("convert", help="turn a Kale-tagged notebook into one using the magics")
    convert.add_argument("notebook", help="notebook annotated with Kale's cell tags")
    convert.add_argument("-o", "--output", help="where to write it (default: NAME.magic.ipynb)")
    convert.set_defaults(func=cmd_convert)

    run = sub.add_parser("run", help="run the pipeline a notebook describes (planned from its cells, as "
                                     "compile does; --execute-notebook runs every cell in a kernel first)")
    run.add_argument("notebook", help="notebook annotated with the magics or with Kale's tags")
    run.add_argument("--experiment", help="experiment to group the run under")
    run.add_argument("--pipeline", help="pipeline name")
    run.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                     help="override a pipeline parameter (repeatable)")
    run.add_argument("--sweep", action="append", default=[], metavar="NAME=V1,V2",
                     help="run once per value of a parameter (repeatable: every combination), as %%kale_run --sweep")
    run.add_argument("--engine", metavar="ENGINE", help="where the steps run: local, kfp or an installed engine")
    run.add_argument("--host", help="Kubeflow Pipelines endpoint (runs on KFP)")
    run.add_argument("--description", help="pipeline description")
    run.add_argument("--compile-only", action="store_true",
                     help="build the pipeline without running it")
    run.add_argument("--no-cache", action="store_true", help="run every step; reuse no cached result")
    run.add_argument("--no-snapshot", action="store_true", help="do not snapshot the workspace")
    run.add_argument("--only", type=_step_names, metavar="STEP[,STEP]",
                     help="run just these steps, reusing the values they load from earlier runs")
    run.add_argument("--from", dest="from_step", metavar="STEP", help="run STEP and every step after it")
    run.add_argument("--to", dest="to_step", metavar="STEP", help="run STEP and the steps before it only")
    run.add_argument("--execute-notebook", action="store_true",
                     help="run every cell in a fresh kernel first, each %%kale_run line then running the "
                          "pipeline with the kernel's values (for notebooks whose plan needs them)")
    run.add_argument("--output", help="with --execute-notebook: save the executed notebook here")
    run.set_defaults(func=cmd_run)

    for engine in engines.registry:  # kale-magic compile and image, from the KFP engine
        engine.add_commands(sub, plan_file=_plan_file)

    runs = sub.add_parser("runs", help="the recorded runs side by side (as %%kale_runs)")
    runs.add_argument("--experiment", help="only the runs of this experiment")
    runs.add_argument("--last", type=int, metavar="N", help="only the N most recent runs")
    runs.add_argument("--sweep", metavar="ID", help="only the points of this sweep")
    runs.add_argument("--plot", metavar="METRIC", help="also show this metric over the runs")
    runs.add_argument("--by", metavar="PARAM", help="with --plot: the metric against this parameter")
    runs.add_argument("--compare", nargs=2, metavar=("RUN_A", "RUN_B"),
                      help="what changed between two runs")
    runs.add_argument("--dir", default=".", help="the notebooks' folder (default: .)")
    runs.set_defaults(func=cmd_runs)

    show = sub.add_parser("show", help="one recorded run: parameters, metrics, steps")
    show.add_argument("run_id", help="a run id or a unique prefix of one")
    show.add_argument("--dir", default=".", help="the notebook's folder (default: .)")
    show.set_defaults(func=cmd_show)

    cache = sub.add_parser("cache", help="the step cache: how many results it holds, or --clear it")
    cache.add_argument("--clear", action="store_true",
                       help="forget cached step results and delete saved values (run history stays)")
    cache.add_argument("--older-than", type=float, metavar="DAYS",
                       help="with --clear: only what was not used for DAYS days")
    cache.add_argument("--dir", default=".", help="the notebooks' folder (default: .)")
    cache.set_defaults(func=cmd_cache)

    _add_snapshot_commands(sub)
    for command in (parser, *sub.choices.values()):  # options match exactly: --from is not --from-anything
        command.allow_abbrev = False
    return parser


def _version() -> str:
    from ..version import __version__

    return __version__


def _add_snapshot_commands(sub) -> None:
    """``kale-magic snapshot ...`` comes from the snapshot package, when it is installed."""
    try:
        from ..snapshot.cli import add_parser
    except ImportError:
        return
    add_parser(sub)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KaleError as exc:
        print(f"kale-magic: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("kale-magic: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
