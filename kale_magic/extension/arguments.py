"""The options of the magics, declared once and shared with static planning and the command line.

Each parser is IPython's ``magic_arguments`` on a plain function named after its
magic, so ``%%step?`` documents the options, the magics parse their lines with it,
and ``kale-magic compile`` (which has no kernel) reads a notebook's magic lines
exactly as the magics would.  Lines are split with POSIX ``shlex`` quoting rather
than IPython's splitter, which keeps the quotes: ``--param "s=it's"`` and
``--after ""`` mean what they say.
"""

from __future__ import annotations

import re
import shlex

from IPython.core.error import UsageError
from IPython.core.magic_arguments import argument, magic_arguments

from ..errors import KaleError
from ..images import check_image
from ..plan.session import StepOptions


TIMEOUT_MAX = 30 * 24 * 3600  # seconds; beyond it a typo is likelier than a step meant to run that long
RETRIES_MAX = 100


def _names(text: str) -> tuple[str, ...]:
    """``--after a,b``; ``--after ""`` means no parents."""
    return tuple(n.strip() for n in text.split(",") if n.strip())


@magic_arguments()
@argument("name", help="Step name: lowercase letters, digits, '-' or '_'.")
@argument("--after", type=_names, default=None,
          help="Comma-separated steps this one runs after (default: the previous step; '' for none).")
@argument("--cpu", help="CPU request and limit on KFP, e.g. 500m or 2.")
@argument("--memory", help="Memory request and limit on KFP, e.g. 2Gi.")
@argument("--gpu", help="Number of GPUs on KFP.")
@argument("--retries", help=f"How many times KFP retries the step (0 to {RETRIES_MAX}).")
@argument("--timeout", help=f"Seconds after which the step is stopped (1 to {TIMEOUT_MAX}, i.e. 30 days; "
                            "without it, no limit).")
@argument("--image", help="Container image for this step on KFP, e.g. python:3.11.")
@argument("--no-cache", action="store_true", help="Always run this step, never reuse a cached result.")
@argument("--reads", metavar="GLOB[,GLOB]",
          help="Workspace files the step reads where kale cannot see it (native readers, subprocesses), "
               "relative to the notebook's folder ('**' crosses folders; a folder means all in it); the cache "
               "keys the step on them instead of the whole workspace.")
@argument("--env", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE]",
          help="Environment variables of this step's process (repeatable).")
@argument("--secret", action="append", default=[], metavar="NAME[:KEY[=ENVVAR]]",
          help="Key KEY (default NAME) of Kubernetes Secret NAME as variable ENVVAR (default KEY); locally "
               "read from the kernel's environment or the .env file beside the notebook (repeatable).")
@argument("--foreach", nargs=3, metavar=("VAR", "in", "NAME"),
          help="Run the cell once per item of NAME (a parameter or a value an earlier step produces) with VAR "
               "bound to the item; each name it produces is then the list of the items' values.")
@argument("--if", dest="condition", metavar='"EXPR"',
          help="Run the step only when EXPR holds, over parameters and values of earlier steps (names, literals, "
               "comparisons, and/or/not, arithmetic, subscripts, attributes, len abs min max any all round); "
               "when false, it and every step after it are skipped and the run succeeds.")
def step():
    """Mark this cell as (part of) a pipeline step, and run it."""


@magic_arguments()
@argument("--experiment", default="Default", help="Experiment that groups runs for comparison.")
@argument("--pipeline", help="Pipeline name (default: the notebook's file name).")
@argument("--description", default="", help="Pipeline description.")
@argument("--engine", metavar="ENGINE", help="Where to run: local, kfp or an installed engine (default: kfp when "
          "a KFP host is set, else local).")
@argument("--host", help="KFP API endpoint; implies --engine kfp.")
@argument("--upload-only", action="store_true", help="KFP: compile and upload the pipeline, do not run.")
@argument("--param", action="append", default=[], metavar="NAME=VALUE",
          help="Override a %%%%parameters value (repeatable).")
@argument("--sweep", action="append", default=[], metavar="NAME=V1,V2",
          help="Run once per value of a parameter (a list literal works too: \"lr=[0.1, 0.01]\"); repeated, "
               "once per combination; returns a Sweep.")
@argument("--compile-only", action="store_true", help="Write the step notebooks (and KFP YAML), do not run.")
@argument("--no-snapshot", action="store_true", help="Do not snapshot the workspace.")
@argument("--from-snapshot", metavar="ID", help="Run on the files of an earlier snapshot (%%kale_snapshots).")
@argument("--snapshot-max", metavar="SIZE", help="Refuse a snapshot above this size, e.g. 10G (default 5G).")
@argument("--background", action="store_true", help="Return at once; use run.wait().")
@argument("--no-cache", action="store_true", help="Run every step; reuse no cached result.")
@argument("--cache-only-check", action="store_true",
          help="Only show which steps would be reused from the cache and why the others would run.")
@argument("--resume", nargs="?", const="", default=None, metavar="RUN_ID",
          help="Reuse the steps that succeeded in RUN_ID (default: the last failed run) and are unchanged.")
@argument("--only", type=_names, default=(), metavar="STEP[,STEP]",
          help="Run just these steps; the values they load from other steps are reused from earlier runs.")
@argument("--from", dest="from_step", metavar="STEP", help="Run STEP and every step after it; reuse the rest.")
@argument("--to", dest="to_step", metavar="STEP", help="Run STEP and the steps before it only.")
@argument("--schedule", metavar="CRON", help="KFP: create a recurring run instead of running now (six fields, "
                                              "seconds first; a five-field crontab line is converted).")
@argument("--max-concurrency", type=int, metavar="N", help="With --schedule: runs at once (1 to 10, default 1).")
@argument("--start", metavar="ISO", help="With --schedule: first possible run time, e.g. 2026-12-24T02:00.")
@argument("--end", metavar="ISO", help="With --schedule: no run after this time.")
@argument("--catchup", action="store_true", default=None,
          help="With --schedule: start the runs missed while paused or late (KFP's default).")
@argument("--no-catchup", action="store_false", dest="catchup", help="With --schedule: skip missed runs.")
def kale_run():
    """Validate, snapshot, compile, upload and run the annotated notebook as a pipeline."""


@magic_arguments()
@argument("--experiment", help="Only the runs of this experiment.")
@argument("--last", type=int, help="Only the N most recent runs.")
@argument("--plot", metavar="METRIC", help="Also plot this metric over the runs.")
@argument("--compare", nargs=2, metavar=("RUN_A", "RUN_B"), help="What changed between two runs.")
@argument("--all", action="store_true", help="The runs of every notebook in the folder, not only this one's.")
@argument("--sweep", metavar="ID", help="Only the points of this sweep (its id, or the last part of it).")
@argument("--by", metavar="PARAM", help="With --plot: the metric against this parameter, one line per value "
                                        "of the other parameters.")
def kale_runs():
    """The recorded runs side by side (parameters, metrics), a metric's plot, or two runs compared."""


@magic_arguments()
@argument("-n", "--last", type=int, default=20, help="How many of the newest snapshots to list.")
def kale_snapshots():
    """List the workspace snapshots %kale_run took, oldest first (reuse one with --from-snapshot ID)."""


@magic_arguments()
@argument("--clear", action="store_true", help="Forget cached step results and delete saved values.")
@argument("--older-than", type=float, metavar="DAYS", help="With --clear: only what is older than DAYS.")
def kale_cache():
    """Show the step cache of this notebook's folder, or clear it to free disk (run history stays)."""


@magic_arguments()
@argument("step", nargs="?", help="The step (with --failed: default the last step that failed).")
@argument("--run", metavar="RUN_ID", help="The run (default: the latest run of this notebook that ran the step).")
@argument("--outputs", action="store_true", help="Load what the step produced instead of what it received.")
@argument("--failed", action="store_true", help="The last failed step; also print its error and failing line.")
@argument("--item", type=int, metavar="I", help="A --foreach step's item I (with --failed: default the failed one).")
def kale_debug():
    """Load into the kernel exactly what a step received in a run: its parameters and every value it loaded."""


@magic_arguments()
@argument("--pause", metavar="NAME", help="Pause the schedule NAME (no new runs until --resume).")
@argument("--resume", metavar="NAME", help="Resume the paused schedule NAME.")
@argument("--delete", metavar="NAME", help="Delete the schedule NAME (its runs stay).")
@argument("--pipeline", help="The pipeline whose schedules these are (default: the notebook's, as %%kale_run).")
@argument("--host", help="KFP API endpoint (default: Kfp.host or KF_PIPELINES_ENDPOINT).")
def kale_schedules():
    """List this notebook's schedules on Kubeflow Pipelines (next run, last run), or pause/resume/delete one."""


def documented_by(spec):
    """Give a magic method the options and help text of its parser (``%%step?`` shows them)."""
    def decorate(method):
        method.parser = spec.parser
        method.__doc__ = spec.__doc__
        return method
    return decorate


def parse(spec, line: str):
    """Parse a magic line with ``spec``'s parser; a mistake is a ``UsageError`` naming the fix."""
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise UsageError(f"{exc} in: {line.strip()}; balance the quotes around values with spaces.") from None
    spec.parser.allow_abbrev = False  # options match exactly: argparse would read --from as --from-snapshot
    return spec.parser.parse_args(words)


def step_options(args) -> StepOptions:
    """The ``%%step`` options of parsed ``step`` arguments, each one checked.

    Checked here, when the cell is recorded (and when ``kale-magic compile`` or
    ``convert`` reads one), so that an absurd value never reaches an engine or kfp;
    a bad one is a ``UsageError`` naming the step, the option and what it accepts.
    """
    checked = {}
    for option in _STEP_CHECKS:
        value = getattr(args, option)
        try:
            checked[option] = None if value is None else check_step_option(option, value)
        except ValueError as exc:
            raise UsageError(f"%%step {args.name}: --{option} {value}: {exc}.") from None
    reads = ()
    if args.reads is not None:
        try:
            reads = check_reads(args.reads)
        except ValueError as exc:
            raise UsageError(f"%%step {args.name}: --reads {args.reads}: {exc}.") from None
    foreach = None if args.foreach is None else check_foreach(args.name, args.foreach)
    condition = None
    if args.condition is not None:
        from ..plan.condition import parse_condition

        try:
            condition = parse_condition(args.condition).text
        except ValueError as exc:
            raise UsageError(f'%%step {args.name}: --if "{args.condition}": {exc}.') from None
    return StepOptions(after=args.after, no_cache=args.no_cache, reads=reads, foreach=foreach, condition=condition,
                       **checked, **_environment(args))


def check_foreach(step: str, words: list[str]) -> tuple[str, str]:
    """``--foreach VAR in NAME`` as (VAR, NAME); a ``UsageError`` naming what is missing or wrong."""
    var, word, name = words
    if word != "in" or not var.isidentifier() or not name.isidentifier():
        raise UsageError(f"%%step {step}: --foreach {' '.join(words)}: write it as --foreach VAR in NAME with "
                         "two variable names, e.g. --foreach fold in folds.")
    if var == name:
        raise UsageError(f"%%step {step}: --foreach {var} in {name}: the item needs its own name, e.g. "
                         f"--foreach item in {name}.")
    return var, name


def check_reads(text: str) -> tuple[str, ...]:
    """``--reads GLOB[,GLOB]``: globs of files inside the workspace; ValueError says what is accepted."""
    globs = tuple(dict.fromkeys(g.strip() for g in text.split(",") if g.strip()))
    if not globs:
        raise ValueError("give one or more globs of workspace files, e.g. --reads data/*.parquet,lookup.db")
    for glob in globs:
        parts = glob.replace("\\", "/").split("/")
        if glob.startswith(("/", "~")) or ":" in parts[0]:
            raise ValueError(f"'{glob}' is not relative to the notebook's folder; give paths inside it, e.g. "
                             "data/*.csv")
        if ".." in parts or ".kale" in parts:
            raise ValueError(f"'{glob}' leaves the workspace or names kale's own folder; give paths inside it")
        if any(ord(c) < 32 for c in glob) or glob.count("[") != glob.count("]"):
            raise ValueError(f"{glob!r} is not a glob (unbalanced brackets or control characters)")
    return globs


def _environment(args) -> dict:
    """``--env`` and ``--secret`` of a ``%%step`` line, each checked; a later KEY (or ENVVAR) wins."""
    from ..step.environment import parse_env, parse_secret

    env: dict[str, str] = {}
    secrets = {}
    for option, values in (("env", args.env), ("secret", args.secret)):
        for value in values:
            try:
                if option == "env":
                    env.update(parse_env(value))
                else:
                    secret = parse_secret(value)
                    secrets[secret.variable] = secret
            except ValueError as exc:
                raise UsageError(f"%%step {args.name}: --{option} {value}: {exc}.") from None
    clash = sorted(set(env) & set(secrets))
    if clash:
        raise UsageError(f"%%step {args.name}: {clash[0]} is set both by --env and by --secret; keep one.")
    return {"env": tuple(env.items()), "secrets": tuple(secrets.values())}


def check_step_option(option: str, value: str):
    """The value of ``%%step --OPTION value`` (an int where the option counts); ValueError says what is accepted."""
    return _STEP_CHECKS[option](str(value).strip())


def _whole(text: str, low: int, high: int | None, what: str) -> int:
    try:
        number = int(text)
    except ValueError:
        number = None
    if number is None or number < low or (high is not None and number > high):
        bounds = f" from {low} to {high:,}" if high is not None else f", {low} or more"
        raise ValueError(f"give a whole number of {what}{bounds}")
    return number


def _timeout(text: str) -> int:
    try:
        return _whole(text, 1, TIMEOUT_MAX, "seconds")
    except ValueError as exc:
        raise ValueError(f"{exc} (30 days); leave --timeout out for no limit") from None


# Kubernetes quantities, as far as kfp accepts them (it refuses e.g. 1e3 and 1.5Gi).
_CPU = re.compile(r"(\d*\.)?\d+m?")
_MEMORY = re.compile(r"\d+(E|Ei|P|Pi|T|Ti|G|Gi|M|Mi|K|Ki)?")


def _cpu(text: str) -> str:
    if not _CPU.fullmatch(text) or not float(text.rstrip("m")) > 0:
        raise ValueError("give a Kubernetes CPU quantity above 0, such as 500m, 1 or 2.5")
    return text


def _memory(text: str) -> str:
    if not _MEMORY.fullmatch(text) or not int(text.rstrip("EPTGMKi")) > 0:
        raise ValueError("give a Kubernetes memory quantity above 0, such as 512Mi, 2Gi or 1G")
    return text


_STEP_CHECKS = {
    "cpu": _cpu,
    "memory": _memory,
    "gpu": lambda text: _whole(text, 0, None, "GPUs"),
    "retries": lambda text: _whole(text, 0, RETRIES_MAX, "retries"),
    "timeout": _timeout,
    "image": check_image,
}


def parse_params(pairs: list[str]) -> dict[str, str]:
    """``--param NAME=VALUE`` pairs (values stay text: the planner reads them against the defaults)."""
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise KaleError(f"--param {pair!r}: write it as NAME=VALUE, e.g. --param n=100")
        out[name.strip()] = value
    return out
