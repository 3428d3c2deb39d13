"""A step's cache key: everything that can change what the step produces, part by part.

The key is a digest over named *parts* (``code``, ``parameter:n``, ``input:x``,
``function:clean``, ``library:numpy`` ...).  Parts are kept next to the digest so
that a miss can be explained by naming the parts that differ from the last time.

What a step runs: its own cells (exact text), every ``%%imports`` cell (exact
text), and from ``%%functions`` every top-level statement that is not a ``def``
or ``class`` plus the definitions it uses, directly or through other functions
(compared as normalized code, so comments and formatting there do not count).
A step that reaches names dynamically (``globals()``, ``eval``, ``exec``,
``locals()``, ``vars()``) depends on every definition.

What it receives: the values of the parameters it reads, and the content
checksum of each input value (from the marshal record of the run that saved
it), so a re-run upstream step that produced the same bytes does not force its
descendants to run.

What it saves is not part of the key: which values a step must save, and in which format, depends on
how it was planned (a kernel knows every value's type, ``kale-magic run`` does not and keeps fewer final
results), so an entry serves any run whose step saves a subset of the entry's values
(:class:`~kale_magic.cache.reuse.StepCache`), and headless and kernel runs share the cache.

What it read: the digest of these parts is the step's *base*; the full key is
``<base>-<files>``, where ``<files>`` digests the workspace files and listings the
step read when it ran (:func:`entry_key`).  They are known only after a run, so a
lookup is two-level: the entries of a base, then the first whose files are what
the step would find now (:mod:`.workspace`).
"""

from __future__ import annotations

import ast
import hashlib
import json
import sys
from collections.abc import Mapping
from functools import lru_cache

from ..plan.model import Plan, StepPlan

KEY_FORMAT = "3"  # bump when the meaning of a part changes, so old entries stop matching
DYNAMIC_NAMES = frozenset({"globals", "eval", "exec", "locals", "vars"})
SHORT_VALUE = 60  # parameter values up to this length are kept readable in the parts


def digest(parts: Mapping[str, str]) -> str:
    text = json.dumps(dict(parts), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _hash(texts) -> str:
    h = hashlib.sha256()
    for text in texts:
        h.update(text.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def key_parts(plan: Plan, name: str, parameters: Mapping[str, object], inputs: Mapping[str, dict], *,
              leave_out: frozenset[str] = frozenset(), constant: Mapping[str, str] | None = None) -> dict[str, str]:
    """The parts of step ``name``'s key; ``inputs`` maps each input name to its marshal record. ``leave_out``:
    parameters and inputs not keyed (an item is keyed on its own item, not on the value its loop goes over);
    ``constant``: :func:`step_parts` of the step, when the caller computed them once for all its items."""
    from ..step.notebooks import literal

    step = plan.steps[name]
    parts = dict(step_parts(plan, name) if constant is None else constant)
    for param in step.parameters:
        if param in leave_out:
            continue
        text = literal(parameters[param])
        parts[f"parameter:{param}"] = text if len(text) <= SHORT_VALUE else "sha256:" + _hash([text])
    backends = set()
    for transfer in step.inputs:
        if transfer.name in leave_out:
            continue
        record = inputs[transfer.name]
        parts[f"input:{transfer.name}"] = f"{transfer.producer}:{record['checksum']}"
        if record["backend"]:  # None: the list of no item's values
            backends.add(record["backend"])
    for backend in sorted(backends):
        parts[f"backend:{backend}"] = backend_version(backend)
    return parts


def step_parts(plan: Plan, name: str) -> dict[str, str]:
    """The parts of step ``name``'s key that its parameters and inputs do not change: its code, the
    ``%%imports`` and the functions it uses, its options, and the versions of what it imports."""
    from ..version import __version__

    step = plan.steps[name]
    parts = {
        "format": KEY_FORMAT, "step": name, "code": _hash(step.cells), "imports": _hash(plan.imports),
        "metrics": ",".join(step.metrics),
        "python": sys.version.split()[0], "kale-magic": __version__,
    }
    if step.options.reads:
        parts["reads"] = ",".join(step.options.reads)
    parts.update(_function_parts(plan, step))
    for key, value in step.options.env:
        parts[f"env:{key}"] = value if len(value) <= SHORT_VALUE else "sha256:" + _hash([value])
    for secret in step.options.secrets:  # the reference only: a secret's value never reaches a file
        parts[f"secret:{secret.variable}"] = f"{secret.name}:{secret.key}"
    for module in sorted(imported_modules(plan.imports + plan.functions + step.cells)):
        parts[f"library:{module}"] = module_version(module)
    return parts


def entry_key(base: str, files: Mapping[str, str], listings: Mapping[str, str],
              declared: Mapping[str, str] | None = None, workspace: str | None = None) -> str:
    """The full key of a result: its base and what the step read (path -> digest), plus the files
    matching its ``--reads`` globs and the whole workspace when its reads were partly out of sight."""
    read = {**{f"file:{p}": d for p, d in files.items()}, **{f"listing:{p}": d for p, d in listings.items()},
            **{f"declared:{g}": d for g, d in (declared or {}).items()}}
    if workspace is not None:
        read["workspace"] = workspace
    return f"{base}-{digest(read)[:16]}"


# %%functions: only what the step uses ---------------------------------------------------

def _function_parts(plan: Plan, step: StepPlan) -> dict[str, str]:
    from ..plan import analysis

    definitions: dict[str, list[str]] = {}
    always: list[str] = []
    for source in plan.functions:
        for stmt in ast.parse(python_source(source)).body:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                definitions.setdefault(stmt.name, []).append(ast.unparse(stmt))
            else:
                always.append(ast.unparse(stmt))
    if not definitions and not always:
        return {}
    reads = set(analysis.analyze([python_source(s) for s in step.cells], f"step '{step.name}'").reads)
    if always:
        reads |= set(analysis.analyze(always, "the %%functions cells").reads)
    if reads & DYNAMIC_NAMES:
        used = set(definitions)
    else:
        code = analysis.analyze([python_source(s) for s in plan.functions], "the %%functions cells")
        used = (reads | analysis.function_closure(sorted(reads), code.functions)) & set(definitions)
    parts = {f"function:{n}": _hash(definitions[n]) for n in sorted(used)}
    if always:
        parts["functions:statements"] = _hash(always)
    return parts


@lru_cache(maxsize=4096)
def python_source(source: str) -> str:
    """The cell as Python (IPython's magics and ``!`` lines turned into calls), like the kernel ran it."""
    from IPython.core.inputtransformer2 import TransformerManager

    return TransformerManager().transform_cell(source)


# versions ---------------------------------------------------------------------------------

def imported_modules(sources) -> set[str]:
    """Top-level modules named by import statements (stdlib ones excluded: Python's version covers them)."""
    out = set()
    for source in sources:
        try:
            tree = ast.parse(python_source(source))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                out.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                out.add(node.module.split(".")[0])
    return {m for m in out if m not in sys.stdlib_module_names}


def module_version(module: str) -> str:
    """The version of the distribution that installs ``module`` (the same in a kernel that imported it and in
    ``kale-magic run``, which did not); else the loaded module's ``__version__``; '?' when neither says."""
    version = _distribution_version(module)
    if version != "?":
        return version
    version = getattr(sys.modules.get(module), "__version__", None)
    return version if isinstance(version, str) else "?"


@lru_cache(maxsize=1024)
def _distribution_version(module: str) -> str:
    from importlib import metadata

    for name in [module, *_distributions().get(module, ())]:
        try:
            return metadata.version(name)
        except (metadata.PackageNotFoundError, ValueError):
            continue
    return "?"


@lru_cache(maxsize=1)
def _distributions() -> dict:
    """Top-level module -> distributions installing it (``sklearn`` -> ``scikit-learn``)."""
    from importlib import metadata

    return metadata.packages_distributions()


def backend_version(name: str) -> str:
    """The backend's own format version plus the versions of the libraries it uses."""
    from .. import marshal

    if name not in marshal.registry:
        return "?"
    backend = marshal.registry.get(name)
    libraries = ",".join(f"{m}={module_version(m)}" for m in sorted(backend.packages))
    return f"{backend.version};{libraries}" if libraries else str(backend.version)


# explaining a miss ------------------------------------------------------------------------

LABELS = {
    "code": "the step's code changed", "imports": "the %%imports cells changed",
    "functions:statements": "top-level statements in %%functions changed",
    "outputs": "the values it must save changed", "metrics": "its metrics changed",
    "reads": "its --reads globs changed",
    "python": "the Python version changed", "kale-magic": "the kale-magic version changed",
    "format": "the cache format changed",
}


def explain(new: Mapping[str, str], old: Mapping[str, str]) -> str:
    """Which parts differ, in words: 'parameter n changed (100 -> 200); function clean changed'."""
    reasons = []
    for part in sorted(set(new) | set(old), key=_part_order):
        if new.get(part) == old.get(part):
            continue
        kind, _, name = part.partition(":")
        if part in LABELS:
            reasons.append(LABELS[part])
        elif kind == "parameter":
            reasons.append(f"parameter {name} changed ({old.get(part, 'unset')} -> {new.get(part, 'unset')})")
        elif kind == "input":
            producer = (new.get(part) or old.get(part)).split(":")[0]
            reasons.append(f"input {name} from step '{producer}' changed" if part in new and part in old
                           else f"input {name} {'added' if part in new else 'removed'}")
        elif kind == "function":
            reasons.append(f"function {name} " + ("changed" if part in new and part in old
                                                  else "is now used" if part in new else "is no longer used"))
        elif kind == "library":
            reasons.append(_library_change(name, old.get(part), new.get(part)))
        elif kind == "backend":
            reasons.append(_backend_change(name, old.get(part), new.get(part)))
        else:
            reasons.append(f"{part} changed")
    return "; ".join(reasons) or "nothing changed"


def _library_change(name: str, old: str | None, new: str | None) -> str:
    """'library numpy 2.1.0 -> 2.2.0', 'the step now imports pandas (2.2.3)', in words where '?' was."""
    if old is None:
        return f"the step now imports {name}" + (f" ({new})" if new != "?" else "")
    if new is None:
        return f"the step no longer imports {name}"
    return f"library {name} {_said(old)} -> {_said(new)}"


def _backend_change(name: str, old: str | None, new: str | None) -> str:
    """How the format of the values a step receives changed: a backend's version is
    ``FORMAT;lib=VERSION,...`` (see :func:`backend_version`), never shown as such."""
    if old is None or new is None:
        return (f"an input is now saved in the {name} format" if old is None
                else f"no input is saved in the {name} format any more")
    old_format, _, old_libs = old.partition(";")
    new_format, _, new_libs = new.partition(";")
    changes = [f"the {name} format's version {_said(old_format)} -> {_said(new_format)}"] \
        if old_format != new_format else []
    before = dict(item.partition("=")[::2] for item in old_libs.split(",") if item)
    after = dict(item.partition("=")[::2] for item in new_libs.split(",") if item)
    changes += [f"{lib} {_said(before.get(lib, '?'))} -> {_said(after.get(lib, '?'))} (it loads the inputs "
                f"saved in the {name} format)" for lib in sorted(set(before) | set(after))
                if before.get(lib) != after.get(lib)]
    return "; ".join(changes) or f"the {name} format changed"


def _said(version: str) -> str:
    return "an unknown version" if version in ("?", "") else version


def _part_order(part: str) -> tuple[int, str]:
    order = ("code", "parameter", "input", "function", "functions", "imports", "outputs", "metrics")
    kind = part.partition(":")[0]
    return (order.index(kind) if kind in order else len(order), part)
