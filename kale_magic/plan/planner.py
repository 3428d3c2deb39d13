"""Recorded cells + the live namespace -> a validated :class:`~kale_magic.plan.model.Plan`.

Everything a user can get wrong in the annotations is found here, before anything
runs, and reported as one sentence naming the cell or step and the fix.  Live
values are only looked at by type (``marshal.describe``): nothing is serialized.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from . import analysis
from ..errors import UnmarshallableError, ValidationError
from .model import Foreach, Plan, StepPlan, Transfer
from .session import RecordedCell, StepOptions

STEP_NAME = re.compile(r"^[a-z]([a-z0-9_-]{0,61}[a-z0-9])?$")
# The names IPython puts in a user namespace, which never flow between steps: its globals, and the
# input/output caches and dunders it sets while a cell runs (_, __, _i3, _5, __warningregistry__, ...).
IPYTHON_GLOBALS = frozenset({"get_ipython", "display", "In", "Out", "exit", "quit", "_ih", "_oh", "_dh"})
_BOOKKEEPING = re.compile(r"^(_+|_i+|_i?\d+|_exit_code|__\w+__)$")


def is_bookkeeping(name: str) -> bool:
    """True for a name IPython or Python set, not the user."""
    return name in IPYTHON_GLOBALS or bool(_BOOKKEEPING.match(name))


def check_step_name(name: str) -> None:
    if not STEP_NAME.match(name):
        hint = re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-_") or "step"
        if not hint[0].isalpha():
            hint = "step-" + hint
        raise ValidationError(
            f"step name '{name}' is not valid: use lowercase letters, digits, '-' or '_', starting with a "
            f"letter, at most 63 characters (Kubernetes names), e.g. %%step {hint[:63]}")


def default_pipeline_name(notebook: Path | None) -> str:
    """The pipeline a notebook makes when ``--pipeline`` does not say: its file name, Kubernetes-safe."""
    stem = notebook.stem if notebook else "pipeline"
    return re.sub(r"[^a-z0-9-]+", "-", stem.lower()).strip("-") or "pipeline"


@dataclass
class _Step:
    name: str
    cells: list[RecordedCell] = field(default_factory=list)
    options: StepOptions = field(default_factory=StepOptions)


@dataclass
class Environment:
    """What the planner needs to know about the kernel, as plain data."""

    namespace: Mapping[str, object]  # the live user namespace (values only looked at by type)
    ignored: frozenset[str] = frozenset()  # IPython's own names (In, Out, get_ipython, _ ...) and builtins

    @classmethod
    def of(cls, namespace: Mapping[str, object], hidden=()) -> "Environment":
        """The environment of a namespace; ``hidden`` are names the shell put there (``user_ns_hidden``)."""
        import builtins

        return cls(namespace, frozenset(dir(builtins)) | IPYTHON_GLOBALS | frozenset(hidden))


class _Problems:
    """Every problem validation finds, one sentence each, so one refusal names them all.

    Ranks order them, the most fundamental first: a cell that cannot be read, then the
    shape of the pipeline, its parameters, the data flow, the values, the metrics.
    """

    SYNTAX, STRUCTURE, PARAMETERS, FLOW, VALUES, METRICS = range(6)

    def __init__(self):
        self._found: list[tuple[int, str]] = []
        self.unreadable = False  # a cell could not be parsed: what it defines is unknown
        self.unordered: set[str] = set()  # steps whose --after is wrong: what runs before them is unknown

    def add(self, rank: int, problem: ValidationError | str) -> None:
        for sentence in problem.problems if isinstance(problem, ValidationError) else [problem]:
            if all(sentence != known for _, known in self._found):
                self._found.append((rank, sentence))

    def check(self, rank: int, function, *args, fallback=None):
        """``function(*args)``, or ``fallback`` after noting the problems it raised."""
        try:
            return function(*args)
        except ValidationError as exc:
            self.add(rank, exc)
            return fallback

    def readable(self, cells: list[RecordedCell]) -> list[RecordedCell]:
        """The cells that parse; the others are problems (and make later "not defined" guesses unsafe)."""
        out = []
        for cell in cells:
            if self.check(self.SYNTAX, analysis.parse, cell.python, cell.label) is None:
                self.unreadable = True
            else:
                out.append(cell)
        return out

    @property
    def sentences(self) -> list[str]:
        """The problems found, the most fundamental first (what a refusal would say)."""
        return [sentence for _, sentence in sorted(self._found, key=lambda f: f[0])]

    def merge(self, data, other: "_Problems"):
        """``data``, after taking ``other``'s problems (a phase's) in the order it found them."""
        for rank, sentence in other._found:
            self.add(rank, sentence)
        self.unreadable |= other.unreadable
        self.unordered |= other.unordered
        return data

    def raise_if_any(self) -> None:
        if self._found:
            raise ValidationError(*self.sentences)


def build_plan(cells: list[RecordedCell], env: Environment, *, pipeline: str = "pipeline",
               experiment: str = "Default", description: str = "", overrides: Mapping[str, str] | None = None,
               notebook_path: Path | None = None, order_source: str = "execution order") -> Plan:
    """The plan of the recorded cells, or a :class:`ValidationError` naming every problem found.

    Each phase returns its data and its problems; every phase runs whatever the earlier ones found, so
    one refusal names every problem (a phase that depends on an unsure answer hedges instead)."""
    problems = _Problems()
    kinds = {kind: [c for c in cells if c.kind == kind] for kind in analysis_kinds()}
    parameters = problems.merge(*read_parameters(kinds["parameters"], overrides or {}))
    code = problems.merge(*read_code(kinds["imports"] + kinds["functions"], env.ignored))
    structure = problems.merge(*order_steps(kinds["step"], code))
    if not structure.order:
        problems.raise_if_any()
    flow = problems.merge(*trace_data_flow(structure, parameters, code, env, cells, unsure=problems.unreadable))
    metrics = problems.merge(*find_metrics(kinds["metrics"], structure, flow.loops))
    problems.raise_if_any()
    return assemble(structure, parameters, flow, metrics, kinds, pipeline=pipeline, experiment=experiment,
                    description=description, notebook_path=notebook_path, order_source=order_source)


# the phases ----------------------------------------------------------------------

@dataclass(frozen=True)
class Parameters:
    """The pipeline's parameters: the ``%%parameters`` literals with ``--param`` over them."""

    values: dict[str, object]
    invalid: frozenset[str]  # assigned by a %%parameters line that is a problem already: not "undefined"


def read_parameters(cells: list[RecordedCell], overrides: Mapping[str, str]) -> tuple[Parameters, _Problems]:
    problems = _Problems()
    values, invalid = {}, set()
    for cell in problems.readable(cells):
        found = problems.check(problems.PARAMETERS, analysis.literal_parameters, cell.python, cell.label)
        if found is None:
            invalid |= analysis.analyze([cell.python], cell.label).writes
        values.update(found or {})
    return Parameters(_apply_overrides(values, overrides, problems), frozenset(invalid)), problems


@dataclass(frozen=True)
class Code:
    """What the ``%%imports``/``%%functions`` cells, which every step runs, do with global names."""

    names: analysis.Names
    defined: frozenset[str]  # names they bind, also those only seen created when they ran
    always_reads: tuple[str, ...]  # names every step reads through them (function bodies: where called)


def read_code(cells: list[RecordedCell], ignored: frozenset[str] = frozenset()) -> tuple[Code, _Problems]:
    problems = _Problems()
    names = analysis.analyze([c.python for c in problems.readable(cells)], "the %%imports/%%functions cells")
    defined = names.writes | {n for c in cells for n in c.created}
    always = tuple(n for n in names.reads if n not in ignored and n not in names.deferred)
    return Code(names, frozenset(defined), always), problems


@dataclass(frozen=True)
class Structure:
    """The steps, grouped from their cells, and the order they run in."""

    steps: dict[str, _Step]
    parents: dict[str, tuple[str, ...]]
    order: list[str]  # run order (notebook order where --after makes a cycle)
    ancestors: dict[str, set[str]]
    names: dict[str, tuple[analysis.Names, set[str]]]  # step -> (names it reads and writes, names it changes)
    # Steps whose --after is wrong, and their descendants: what runs before them is unknown, so of what they
    # read only the names no step produces are problems already (every problem at once, none guessed).
    unordered: frozenset[str]

    @property
    def changes(self) -> dict[str, set[str]]:
        return {name: changed for name, (_, changed) in self.names.items()}


def order_steps(cells: list[RecordedCell], code: Code) -> tuple[Structure, _Problems]:
    """The steps of the ``%%step`` cells in run order; no steps at all is a problem (and an empty order)."""
    problems = _Problems()
    steps = _group_steps(cells, problems)
    if not steps:
        problems.add(problems.STRUCTURE, "no %%step cells were recorded: annotate at least one cell with "
                                         "'%%step NAME' and run it, then run %kale_run again.")
    parents = _parents(steps, problems)
    names = {name: _step_names(step, code.names, problems) for name, step in steps.items()}
    order = _topological(steps, parents, problems)
    if order is None:  # a cycle: follow values in notebook order, each step's flow said with a hedge
        order = list(steps)
        parents = {name: tuple(p for p in parents[name] if order.index(p) < order.index(name)) for name in order}
        problems.unordered.update(order)
    ancestors = _ancestors(order, parents)
    unordered = {name for name in order
                 if name in problems.unordered or not problems.unordered.isdisjoint(ancestors[name])}
    return Structure(steps, parents, order, ancestors, names, frozenset(unordered)), problems


@dataclass(frozen=True)
class Flow:
    """Which values and parameters reach each step, from which step, and how they travel."""

    loops: dict[str, Foreach]  # step -> its checked --foreach clause
    inputs: dict[str, list[Transfer]]
    parameters: dict[str, list[str]]  # step -> the parameters it reads
    gates: dict[str, tuple[tuple[str, ...], tuple[Transfer, ...]]]  # step -> what its --if reads
    outputs: dict[str, list[Transfer]]  # step -> what it saves: for later steps, and results run.load returns


def trace_data_flow(structure: Structure, parameters: Parameters, code: Code, env: Environment,
                    cells: list[RecordedCell], *, unsure: bool = False) -> tuple[Flow, _Problems]:
    """``unsure``: an earlier phase met a cell that does not parse, so a name nothing defines may be
    defined there: only names the analysis can place elsewhere are problems."""
    problems = _Problems()
    problems.unreadable = unsure
    steps, order, ancestors = structure.steps, structure.order, structure.ancestors
    changes, params = structure.changes, parameters.values
    code_defined, ignored = code.defined, set(env.ignored)
    writers = _writers(order, changes)
    loops = _loops(steps, order, structure.parents, ancestors, writers, params, structure.names,
                   code_defined | parameters.invalid, problems)

    inputs: dict[str, list[Transfer]] = {name: [] for name in order}
    step_params: dict[str, list[str]] = {name: [] for name in order}
    needed: dict[tuple[str, str], Transfer] = {}
    missing: set[str] = {f.name for f in loops.values() if f.producer is None and f.name not in params}
    for name in order:
        reads, _ = structure.names[name]
        for var in dict.fromkeys(list(code.always_reads) + reads.reads):
            if var in ignored:
                continue
            producer = _nearest_writer(var, name, ancestors, writers, problems)
            if producer is not None and var in code_defined and _is_module(env.namespace.get(var)):
                producer = None  # `np.x = ...` in a step: modules are re-imported, never marshalled
            if producer is None:
                if var in params:
                    step_params[name].append(var)
                elif var not in code_defined | parameters.invalid | missing and (
                        name not in structure.unordered or not any(var in changes[s] for s in order)):
                    missing.add(var)
                    problem = _not_produced(var, name, ancestors, changes, cells, env)
                    if problem is not None or not problems.unreadable:
                        problems.add(problems.FLOW, problem or f"step '{name}' reads '{var}', but it is not "
                                                               "defined anywhere in the notebook; check the spelling.")
                continue
            transfer = needed.get((producer, var))
            if transfer is None:
                transfer = problems.check(problems.VALUES, _transfer, var, producer, env, set(loops))
                if transfer is None:
                    continue
                needed[(producer, var)] = transfer
            inputs[name].append(transfer)

    gates = {name: _condition_reads(name, steps[name].options.condition, params, ancestors, writers, needed,
                                    env, problems, (changes, cells), steps[name].options.foreach)
             for name in order}

    for transfer in _results(order, ancestors, changes, writers, ignored, env, set(loops)):
        needed.setdefault((transfer.producer, transfer.name), transfer)
    outputs: dict[str, list[Transfer]] = {name: [] for name in order}
    for (producer, _), transfer in needed.items():
        outputs[producer].append(transfer)
    return Flow(loops, inputs, step_params, gates, outputs), problems


@dataclass(frozen=True)
class Metrics:
    """The ``%%metrics`` names that a step produces, and the step whose value is final."""

    names: list[str]
    producers: dict[str, str]


def find_metrics(cells: list[RecordedCell], structure: Structure,
                 loops: Mapping[str, Foreach] = {}) -> tuple[Metrics, _Problems]:
    problems = _Problems()
    names, producers = _metrics(problems.readable(cells), structure.order, structure.ancestors,
                                structure.changes, problems)
    for metric in names:
        if producers[metric] in loops:
            problems.add(problems.METRICS, f"metric '{metric}' is produced by step '{producers[metric]}' once per "
                                           "item (--foreach); compute one value from the list in a later step "
                                           f"(e.g. mean_{metric} = sum({metric}) / len({metric})) and name that.")
    return Metrics(names, producers), problems


def assemble(structure: Structure, parameters: Parameters, flow: Flow, metrics: Metrics,
             kinds: Mapping[str, list[RecordedCell]], **identity) -> Plan:
    """The Plan of phases that found no problem; ``identity``: its pipeline, experiment, description,
    notebook_path and order_source."""
    plan_steps = {}
    for name in structure.order:
        step = structure.steps[name]
        plan_steps[name] = StepPlan(
            name=name,
            cells=tuple(c.source for c in step.cells),
            parents=structure.parents[name],
            parameters=tuple(p for p in parameters.values if p in flow.parameters[name]),
            inputs=tuple(flow.inputs[name]),
            outputs=tuple(flow.outputs[name]),
            metrics=tuple(m for m in metrics.names if metrics.producers[m] == name),
            options=step.options,
            foreach=flow.loops.get(name),
            condition_parameters=flow.gates[name][0],
            condition_inputs=flow.gates[name][1],
        )
    return Plan(
        steps=plan_steps,
        imports=tuple(c.source for c in kinds.get("imports", ())),
        functions=tuple(c.source for c in kinds.get("functions", ())),
        parameters=parameters.values, metrics=tuple(metrics.names),
        notes=tuple(note for name in structure.order for note in _unsure_notes(name, structure.names[name][0])),
        **identity,
    )


def _unsure_notes(step: str, names: analysis.Names) -> list[str]:
    """Changes in place the analysis cannot trace back to a container, said with the fix."""
    out = []
    for name, source in sorted(names.unsure.items()):
        held = next(iter(analysis.argument_names(source)), None)
        rebind = f"{held} = {held}" if held else "CONTAINER = CONTAINER"
        out.append(f"step '{step}' changes '{name}' in place, but '{name}' comes from '{source}', which the "
                   f"analysis cannot follow: if that hands out items of a value later steps read, rebind that "
                   f"value after the change ('{rebind}') so the changed value flows on.")
    return out


def analysis_kinds() -> tuple[str, ...]:
    return ("imports", "functions", "parameters", "step", "metrics", "skip")


# steps and their order -----------------------------------------------------------

def _group_steps(cells: list[RecordedCell], problems: _Problems) -> dict[str, _Step]:
    """Cells of the same step name continue that step; options of later cells add to earlier ones."""
    steps: dict[str, _Step] = {}
    for cell in cells:
        problems.check(problems.STRUCTURE, check_step_name, cell.step)
        step = steps.setdefault(cell.step, _Step(cell.step))
        step.cells.append(cell)
        step.options = _merge(step.options, cell.options)
    return steps


def _step_names(step: _Step, code: analysis.Names, problems: _Problems) -> tuple[analysis.Names, set[str]]:
    """(names the step reads and writes, names it changes); a cell that does not parse adds nothing.

    A ``--foreach VAR in NAME`` step is read as the loop it is: it reads NAME, VAR is an item of NAME
    (changing it changes NAME) and VAR itself is bound by the loop, not produced."""
    sources = [c.python for c in problems.readable(step.cells)]
    loop = step.options.foreach
    if loop:
        sources.insert(0, f"for {loop[0]} in {loop[1]}:\n    pass")
    names = analysis.analyze(sources, f"step '{step.name}'")
    created = {n for c in step.cells for n in c.created}
    changed = names.changed | created
    if loop:
        changed.discard(loop[0])
        names.writes.discard(loop[0])
    # Bound by the step itself in ways the AST cannot see (star imports, exec, globals()[...]).
    names.reads = [n for n in names.reads if n not in created - names.changed]
    closure = analysis.function_closure(names.reads, code.functions) - set(names.reads) - changed
    names.reads.extend(sorted(closure))
    return names, changed


def _loops(steps, order, parents, ancestors, writers, parameters, step_names, code_defined,
           problems: _Problems) -> dict[str, Foreach]:
    """The ``--foreach`` clause of each looping step, checked: what NAME is, which steps continue which."""
    from ..errors import KaleError
    from ..items import items

    out: dict[str, Foreach] = {}
    for name in order:
        clause = steps[name].options.foreach
        if clause is None:
            continue
        var, over = clause
        said = f"step '{name}' (--foreach {var} in {over})"
        shadowed = [s for s in writers.get(var, ()) if s != name] or (["%%parameters"] if var in parameters else [])
        if shadowed:
            where = "a parameter" if shadowed[0] == "%%parameters" else f"a value step '{shadowed[0]}' produces"
            problems.add(problems.FLOW, f"{said} names its item '{var}', which is also {where}; give the item a "
                                        f"name of its own, e.g. --foreach {var}_item in {over}.")
        producer = _nearest_writer(over, name, ancestors, writers, problems)
        if producer is None and over in parameters:
            try:
                items(parameters[over], name, over)
            except KaleError as exc:
                problems.add(problems.PARAMETERS, f"{said}: {exc}")
        elif producer is None and over not in code_defined:  # (also: a %%parameters line already refused)
            later = [s for s in writers.get(over, ()) if s != name]
            problems.add(problems.FLOW, f"{said} loops over '{over}', which step '{later[0]}' produces but does not "
                                        f"run before it; add --after {later[0]} to the %%step {name} line."
                         if later else f"{said} loops over '{over}', which no step produces and no %%parameters "
                                       "cell defines; check the spelling or produce it in an earlier step.")
        reads, changed = step_names[name]
        received = sorted((changed & set(reads.reads)) - {var} - code_defined)
        if received:
            problems.add(problems.FLOW, f"{said} changes '{received[0]}', a value it receives; its items run apart "
                                        "and their changes cannot be merged: produce a new value instead (e.g. "
                                        f"{received[0]}_{var} = ...).")
        same = [s for s in order[:order.index(name)] if steps[s].options.foreach == clause]
        unchained = [s for s in same if s not in ancestors[name]]
        if unchained:
            problems.add(problems.STRUCTURE, f"{said} repeats the clause of step '{unchained[0]}' but does not run "
                                             f"after it, so it cannot continue its items; add --after {unchained[0]}, "
                                             "or loop with another item name to start a new loop.")
        head = next((out[s].head for s in same if s in ancestors[name] and s in out), name)
        continues = tuple(p for p in parents[name] if p in out and out[p].head == head)
        readable = problems.readable(steps[name].cells)
        body = analysis.analyze([c.python for c in readable], f"step '{name}'")
        reads_all = over in body.reads or len(readable) < len(steps[name].cells)  # unsure: key on all of NAME
        out[name] = Foreach(var, over, producer, head, continues, reads_all)
    return out


def _merge(first: StepOptions, later: StepOptions) -> StepOptions:
    default = StepOptions()
    values = {f: getattr(later, f) if getattr(later, f) != getattr(default, f) else getattr(first, f)
              for f in first.__dataclass_fields__}
    return StepOptions(**values)


def _parents(steps: dict[str, _Step], problems: _Problems) -> dict[str, tuple[str, ...]]:
    """Each step's parents; an --after naming no step (or the step itself) is a problem and is left out."""
    parents = {}
    previous = None
    for name, step in steps.items():
        after = step.options.after
        if after is None:
            parents[name] = (previous,) if previous else ()
        else:
            kept = []
            for parent in dict.fromkeys(after):
                if parent == name:
                    problems.add(problems.STRUCTURE, f"step '{name}' lists itself in --after; remove it.")
                    problems.unordered.add(name)
                elif parent not in steps:
                    problems.unordered.add(name)
                    problems.add(problems.STRUCTURE,
                                 f"step '{name}' runs --after '{parent}', but no step of that name was recorded "
                                 f"(known steps: {', '.join(steps)}); fix the name in the %%step {name} line.")
                else:
                    kept.append(parent)
            parents[name] = tuple(kept)
        previous = name
    return parents


def _topological(steps: dict[str, _Step], parents: dict[str, tuple[str, ...]], problems: _Problems) -> list[str] | None:
    """Kahn's algorithm, ties broken by notebook order, so the result is deterministic; None for a cycle."""
    import heapq

    position = {name: i for i, name in enumerate(steps)}
    waiting = {name: set(p) for name, p in parents.items()}
    children: dict[str, list[str]] = {name: [] for name in steps}
    for child, deps in waiting.items():
        for parent in deps:
            children[parent].append(child)
    order: list[str] = []
    ready = [(position[n], n) for n in steps if not waiting[n]]
    while ready:
        _, name = heapq.heappop(ready)
        order.append(name)
        for child in children[name]:
            waiting[child].discard(name)
            if not waiting[child]:
                heapq.heappush(ready, (position[child], child))
    if len(order) < len(steps):
        cycle = [n for n in steps if n not in order]
        problems.add(problems.STRUCTURE,
                     f"the steps {', '.join(cycle)} depend on each other in a cycle through --after; "
                     "remove one of those --after names so the steps can run in an order.")
        return None
    return order


def _ancestors(order: list[str], parents: dict[str, tuple[str, ...]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for name in order:
        out[name] = set(parents[name]).union(*(out[p] for p in parents[name]))
    return out


# data flow -------------------------------------------------------------------------

def _writers(order: list[str], changes: dict[str, set[str]]) -> dict[str, list[str]]:
    """Each name -> the steps that change it, in run order: looked up per name, not searched per step
    (a search per step and name made planning quadratic in the number of steps)."""
    out: dict[str, list[str]] = {}
    for step in order:
        for var in changes[step]:
            out.setdefault(var, []).append(step)
    return out


def _nearest_writer(var, step, ancestors, writers, problems: _Problems) -> str | None:
    writers = [a for a in writers.get(var, ()) if a in ancestors[step]]
    nearest = [w for w in writers if not any(w in ancestors[other] for other in writers)]
    if len(nearest) > 1:
        problems.add(problems.FLOW,
                     f"steps '{nearest[0]}' and '{nearest[1]}' both change '{var}' and neither runs after the "
                     f"other, so step '{step}' cannot tell which value to use; order them with --after "
                     f"(e.g. %%step {nearest[1]} --after {nearest[0]}) or rename one of the variables.")
    return nearest[0] if nearest else None


def _condition_reads(name, text, parameters, ancestors, writers, needed, env, problems, seen, loop=None):
    """(parameters, values of ancestors) an ``--if`` reads; a name that is neither is a problem.  With
    ``--foreach VAR in NAME`` (``loop``) it is evaluated per item: VAR is the item, bound by the engine."""
    if not text:
        return (), ()
    from .condition import parse_condition

    params, values = [], []
    for var in parse_condition(text).names:
        if loop and var == loop[0]:
            continue
        producer = _nearest_writer(var, name, ancestors, writers, problems)
        if producer is None:
            if var in parameters:
                params.append(var)
            else:
                reader = f'step \'{name}\' --if "{text}"'
                problems.add(problems.FLOW, _not_produced(var, name, ancestors, *seen, env, reader=reader) or (
                    f"{reader} reads '{var}', but no step before '{name}' produces it and it is no parameter; "
                    "check the spelling, or compute it in a step before."))
            continue
        transfer = needed.get((producer, var)) or problems.check(problems.VALUES, _transfer, var, producer, env)
        if transfer is not None:
            needed[(producer, var)] = transfer
            values.append(transfer)
    return tuple(params), tuple(values)


def _not_produced(var, step, ancestors, changes, cells, env, reader=None) -> str | None:
    """Why ``var`` does not reach ``step``, where it can be found; None when it is nowhere."""
    start = f"{reader or f'step {step!r}'} reads '{var}', but"
    later = [s for s in changes if var in changes[s] and s != step and s not in ancestors[step]]
    if later:
        return (f"{start} it is produced by step '{later[0]}', which does not run before '{step}'; "
                f"add --after {later[0]} to the %%step {step} line.")
    skipped = [c for c in cells if c.kind == "skip" and var in _written(c)]
    if skipped:
        return (f"{start} it is defined in a %%skip cell, which never reaches the pipeline; "
                "move that code into a step (or %%functions).")
    if var in env.namespace:
        value = env.namespace[var]
        if _is_setting(value):
            return (f"{start} it is defined in a cell that is not annotated (or typed interactively); if it "
                    f"is a setting, put '{var} = {value!r}' in a %%parameters cell, else move that code into a "
                    f"step that runs before '{step}'.")
        return (f"{start} it is defined in a cell that is not annotated (or typed interactively); "
                f"move that code into a step that runs before '{step}', or into %%functions.")
    return None


def _is_setting(value) -> bool:
    """A short literal (number, string, bool, None, or a small container of them): a parameter's kind."""
    import ast

    if not isinstance(value, (int, float, str, bool, type(None), list, tuple, dict)):
        return False
    text = repr(value)
    if len(text) > 80:
        return False
    try:
        return ast.literal_eval(text) == value
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return False


def _results(order, ancestors, changes, writers, ignored, env, looped=frozenset()) -> list[Transfer]:
    """Values a step changes last (no later step changes them): saved so ``run.load`` can return them.

    Unlike values another step needs, a result that cannot be marshalled is simply not kept.
    """
    out = []
    for step in order:
        for var in sorted(changes[step]):
            if var in ignored or var not in env.namespace or _is_module(env.namespace[var]):
                continue
            if any(step in ancestors[later] for later in writers[var]):  # a descendant changes it again
                continue
            try:
                out.append(_transfer(var, step, env, looped))
            except ValidationError:
                continue
    return out


def _is_module(value) -> bool:
    import types

    return isinstance(value, types.ModuleType)


def _written(cell: RecordedCell) -> set[str]:
    return analysis.analyze([cell.python], cell.label).changed | set(cell.created)


def _transfer(var: str, producer: str, env: Environment, looped=frozenset()) -> Transfer:
    """How ``var`` travels from ``producer``; a looping producer saves each item's value, which the kernel
    holds as the list of them (its first item tells the type)."""
    value = env.namespace.get(var)
    if producer in looped:
        value = value[0] if isinstance(value, list) and value else None
    if var not in env.namespace or value is None and producer in looped:
        return Transfer(var, producer, backend="auto", type_name="unknown")
    from .. import marshal

    try:
        backend, type_name, artifact_type, size = marshal.describe(value)
    except UnmarshallableError as exc:
        from ..marshal.unmarshallable import refusal

        raise ValidationError(refusal(var, value, producer, exc.reason)) from None
    return Transfer(var, producer, backend, type_name, artifact_type, size)


def _metrics(cells, order, ancestors, changes, problems: _Problems) -> tuple[list[str], dict[str, str]]:
    names: list[str] = []
    for cell in cells:
        found = problems.check(problems.METRICS, analysis.metric_names, cell.python, cell.label, fallback=[])
        names.extend(n for n in found if n not in names)
    where = {}
    for metric in names:
        writers = [s for s in order if metric in changes[s]]
        if not writers:
            problems.add(problems.METRICS,
                         f"the %%metrics cell names '{metric}', but no step produces it; compute '{metric}' in a "
                         "step or remove it from the metrics cell.")
            continue
        last = [w for w in writers if not any(w in ancestors[o] for o in writers)]
        if len(last) > 1:
            problems.add(problems.METRICS,
                         f"metric '{metric}' is changed by steps '{last[0]}' and '{last[1]}', which have no "
                         "order between them; order them with --after so one value is final.")
        where[metric] = last[0]
    return [n for n in names if n in where], where


def _apply_overrides(parameters: dict[str, object], overrides: Mapping[str, str],
                     problems: _Problems) -> dict[str, object]:
    """``--param NAME=VALUE``: VALUE is read as a Python literal, or kept as text."""
    import ast

    out = dict(parameters)
    for name, raw in overrides.items():
        if name not in parameters:
            known = ", ".join(parameters) or "none"
            problems.add(problems.PARAMETERS, f"--param {name}: there is no parameter '{name}' in the "
                                              f"%%parameters cells (known: {known}).")
            continue
        default = parameters[name]
        if isinstance(default, str):
            out[name] = raw
            continue
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
        if isinstance(default, (int, float)) and not isinstance(default, bool) and not isinstance(value, (int, float)):
            problems.add(problems.PARAMETERS, f"--param {name}={raw}: '{name}' is a number (default "
                                              f"{default!r}); give a number.")
            continue
        whole = isinstance(default, int) and not isinstance(default, bool)
        if whole and isinstance(value, float) and not math.isfinite(value):  # 1e999 reads as inf
            problems.add(problems.PARAMETERS, f"--param {name}={raw}: '{name}' is a whole number (default "
                                              f"{default!r}) and {raw} is {value!r}; give a finite number.")
            continue
        out[name] = value
    return out
