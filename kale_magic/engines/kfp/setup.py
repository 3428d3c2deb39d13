"""What each Kubeflow step needs before its code runs, decided (and refused) at compile time.

Per step image, one ``kale-environment`` task installs what that image's steps import, pinned to the
kernel's versions (see :mod:`kale_magic.engines.kfp.bootstrap`). A step's notebook sits in its component's
source when it fits well inside the driver's one-argument container spec (measured as the driver gets
it, Go JSON: see :mod:`kale_magic.engines.kfp.delivery`); a larger one travels in the runtime bundle.
Everything that cannot work is refused here, before anything is uploaded, with one sentence naming the
step and the fix: an image whose Python is not the kernel's, a library installed only from a local
path or in editable mode.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from ...errors import ValidationError
from ...plan import Plan, StepPlan
from .bootstrap import archive_name, kernel_python, pack_bundle
from .footprint import unpack_volume
from .requirements import RUNTIME_DISTRIBUTIONS, RUNTIME_STARTUP, SELF, Requirements, closure, step_requirements
from .wheel import runtime_version

# unpacked by every step before its code runs: kfp's executor, kale-magic, what the runtime loads first
RUNTIME_GROUP = ("kfp", SELF, *RUNTIME_STARTUP)
RUNTIME_ARCHIVES = ("_common", *(archive_name(d) for d in RUNTIME_GROUP))
# marshal backends that write a library's own format: loading such a value imports that library only (the
# backend's packages); any other (pickle, dill, joblib...) imports whatever classes the value holds
STRUCTURED_BACKENDS = ("numpy", "pandas", "xgboost", "lightgbm", "torch-tensor")
# calls that import, in the step's process, what the code does not name: the step takes the whole environment
# (a builtin's bare name only: ``model.eval()`` is no eval; ``!cmd`` runs another process, which sees only what
# was unpacked whatever the step received)
DYNAMIC_CALLS = ("__import__", "import_module", "run_module", "run_path", "run_line_magic", "run_cell_magic",
                 "spec_from_file_location")
DYNAMIC_BUILTINS = ("exec", "eval")

EMBED_LIMIT = 64 * 1024  # bytes of a notebook in its component's source, as the driver gets it (limit: 120 KiB)
PYTHON_IMAGE = re.compile(r"(?:^|/)python:(\d+)\.(\d+)")


@dataclass(frozen=True)
class Environment:
    function: str  # the component function: kale_environment, kale_environment_2, ...
    image: str
    requirements: Requirements
    carried: tuple[str, ...]  # steps whose notebook it carries
    # its outputs besides ``environment`` (the runtime group's folder): one archive per other distribution
    archives: tuple[str, ...] = ()


@dataclass(frozen=True)
class Setup:
    notebooks: dict[str, str]  # step -> its notebook as canonical JSON
    environments: dict[str, Environment]  # image -> its environment task (none when nothing is installed)
    images: dict[str, str]  # step -> image
    runtime: str  # the version of kale-magic that compiles (and so must run) the steps
    # step -> the environment's archives it unpacks before it starts (what it imports; the rest on import)
    unpacks: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # step -> the environment's per-distribution archives it takes as inputs (those of its own requirements)
    receives: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # step -> why it takes every archive (its imports cannot be known from its code)
    whole: dict[str, str] = field(default_factory=dict)
    # step -> bytes of the memory-backed volume it unpacks into (0: on disk) and why not memory
    volumes: dict[str, tuple[int, str]] = field(default_factory=dict)

    def environment(self, step: str) -> Environment | None:
        return self.environments.get(self.images[step])

    def carried(self, step: str) -> bool:
        env = self.environment(step)
        return env is not None and step in env.carried


def plan_setup(plan: Plan, opts) -> Setup:
    """``opts``: the compiler's options (base_image, install_packages, snapshot_url, workspace)."""
    images = {name: step.options.image or opts.base_image for name, step in plan.steps.items()}
    for name, image in images.items():
        _check_python(image, name)
    notebooks = {name: notebook_json(plan, step) for name, step in plan.steps.items()}
    carried = {name for name, text in notebooks.items() if embedded_size(text) > EMBED_LIMIT}
    environments, unpacks, receives, whole, needs = {}, {}, {}, {}, {}
    for name, step in plan.steps.items():
        own = _requirements(plan, step, opts) if opts.install_packages else Requirements(())
        needs[name] = own
        # at start: what its code (and its values' backends) imports, and what the runtime loads before
        # the code runs; the rest of the runtime's closure when first imported
        code = _requirements(plan, step, opts, runtime=False) if opts.install_packages else own
        unpacks[name] = tuple(dict.fromkeys(archive_name(d) for d in ("_common", *RUNTIME_GROUP,
                                                                     *(p[0] for p in code.pins))))
        reason = unknown_imports(plan, step, opts.workspace)
        if reason:
            whole[name] = reason
    needed = {name: {archive_name(d) for d, _ in own.pins} for name, own in needs.items()}
    for n, image in enumerate(dict.fromkeys(images.values())):
        steps = [name for name in plan.steps if images[name] == image]
        if not opts.install_packages and not carried.intersection(steps):
            continue
        requirements = Requirements(())
        if opts.install_packages:
            requirements = Requirements((("kfp", _kfp_version()),))  # the steps run kfp's executor from it
        for name in steps:
            requirements |= needs[name]
        archives = tuple(sorted({archive_name(d) for d, _ in requirements.pins} - runtime_group(opts)))
        for name in steps:
            wanted = _received(plan, name, needed, whole)
            receives[name] = tuple(a for a in archives if name in whole or a in wanted)
        function = "kale_environment" if n == 0 else f"kale_environment_{n + 1}"
        environments[image] = Environment(function, image, requirements, tuple(s for s in steps if s in carried),
                                          archives)
    setup = Setup(notebooks, environments, images, runtime_version(), unpacks, receives, whole)
    setup.volumes.update((name, unpack_volume(setup, name, step.options.memory)) for name, step in plan.steps.items()
                         if setup.environment(name) is not None)
    return setup


def runtime_group(opts) -> set[str]:
    """The archives in the environment task's ``environment`` folder, which every step takes: kfp's executor,
    kale-magic, the files no distribution's RECORD owns (``_common``), the step runtime's closure (what it
    loads first, and IPython's prompt_toolkit, pexpect, stack_data... which it may load) and what unpacks the
    workspace snapshot; each other distribution is an output of its own, which only the steps whose
    requirements hold it take."""
    roots = (*RUNTIME_DISTRIBUTIONS, *(("zstandard",) if _zstd_snapshot(opts) else ()))
    return set(RUNTIME_ARCHIVES) | {archive_name(d) for d in closure(roots)}


def _zstd_snapshot(opts) -> bool:
    return bool(opts.snapshot_url and opts.snapshot_url.endswith(".zst"))


def _received(plan: Plan, name: str, needs: dict, whole: dict) -> set[str]:
    """The archives step ``name`` needs: its requirements', and, for each value it loads that may hold any
    class (a pickle), those of the step that made it (and so on up: that step may have passed it on)."""
    wanted, todo, seen = set(), [name], set()
    while todo:
        step = todo.pop()
        if step in seen:
            continue
        seen.add(step)
        if step in whole:  # its values may hold classes of any module
            whole.setdefault(name, f"it loads a value of step '{step}', which takes every archive: {whole[step]}")
            return set()
        if step not in plan.steps:  # a partial run's value from an earlier run: what its classes need is unknown
            whole.setdefault(name, f"it loads a pickled value that step '{step}' of an earlier run made")
            return set()
        wanted |= needs[step]
        todo += [t.producer for t in (*plan.steps[step].inputs, *plan.steps[step].condition_inputs)
                 if t.backend not in STRUCTURED_BACKENDS]
    return wanted


def unknown_imports(plan: Plan, step: StepPlan, workspace) -> str:
    """Why the modules ``step``'s code imports cannot be known from it ("" when they can): it calls
    something that imports by a computed name, runs a line or cell magic, imports a module of the
    notebook's own folder (whose imports are not followed), or has a cell that does not parse (its imports
    cannot be read, so the sound answer is every archive)."""
    import ast

    from ...cache.keys import imported_modules, python_source

    for source in (*plan.imports, *plan.functions, *step.cells):
        try:
            tree = ast.parse(python_source(source))
        except SyntaxError as e:
            return f"its cell starting {source.strip().splitlines()[0][:40]!r} does not parse ({e.msg})"
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                called = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                if called in DYNAMIC_CALLS or isinstance(node.func, ast.Name) and called in DYNAMIC_BUILTINS:
                    return f"its code calls {called}"
    if workspace is not None:
        for module in sorted(imported_modules((*plan.imports, *plan.functions, *step.cells))):
            if (workspace / module).is_dir() or (workspace / f"{module}.py").is_file():
                return f"its code imports the notebook folder's module '{module}'"
    return ""


def embedded_size(text: str) -> int:
    """Bytes the notebook ``text`` takes in its executor's container spec: the component source holds its
    ``repr``, which the spec's JSON escapes again (Go escapes ``<``, ``>``, ``&`` to six bytes each)."""
    from .delivery import go_json

    return len(go_json(repr(text)))


def bundle(setup: Setup, env: Environment, wheel: bytes, wheel_name: str) -> bytes:
    """The runtime bundle of ``env``'s task: kale-magic's wheel and the notebooks too large to embed
    (empty when there is neither)."""
    from .bootstrap import NOTEBOOKS

    files = {f"{NOTEBOOKS}/{step}.json": setup.notebooks[step].encode() for step in env.carried}
    if wheel:
        files[wheel_name] = wheel
    return pack_bundle(files) if files else b""


def _kfp_version() -> str:
    import kfp

    return kfp.__version__


def notebook_json(plan: Plan, step: StepPlan) -> str:
    """The step notebook as canonical JSON (its cell ids are deterministic)."""
    from ...step.notebooks import step_notebook

    return json.dumps(step_notebook(plan, step.name), sort_keys=True, separators=(",", ":"))


def _check_python(image: str, step: str) -> None:
    match = PYTHON_IMAGE.search(image)
    if match and "%s.%s" % match.groups() != kernel_python():
        raise ValidationError(
            f"Step '{step}' would run on {image}, which has Python {'.'.join(match.groups())}, but the notebook's "
            f"kernel runs Python {kernel_python()}: use an image with Python {kernel_python()} (Kfp.base_image "
            "or %%step --image).")


def _requirements(plan: Plan, step: StepPlan, opts, runtime: bool = True) -> Requirements:
    """The step's pinned closure: its code's imports, plus the libraries of the marshal backends of its
    values (or, for values whose backend is chosen when saved, of every backend for a library it imports),
    plus (``runtime``) the step runtime's."""
    from ... import marshal
    from ...cache.keys import imported_modules

    sources = plan.imports + plan.functions + step.cells
    imported = imported_modules(sources)
    used = {t.backend for t in (*step.inputs, *step.outputs, *step.condition_inputs)}  # its --if gate loads
    modules = set()
    for backend in marshal.registry:
        if backend.name in used or set(backend.packages) & imported:
            modules |= set(backend.packages) | {type(backend).__module__.split(".")[0]}
    if _zstd_snapshot(opts):  # unpacking the snapshot's pack
        modules.add("zstandard")
    return step_requirements(sources, modules, opts.workspace, where=f"step '{step.name}'", runtime=runtime)
