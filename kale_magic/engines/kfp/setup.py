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
from .requirements import RUNTIME_STARTUP, SELF, Requirements, step_requirements
from .wheel import runtime_version

EMBED_LIMIT = 64 * 1024  # bytes of a notebook in its component's source, as the driver gets it (limit: 120 KiB)
PYTHON_IMAGE = re.compile(r"(?:^|/)python:(\d+)\.(\d+)")


@dataclass(frozen=True)
class Environment:
    function: str  # the component function: kale_environment, kale_environment_2, ...
    image: str
    requirements: Requirements
    carried: tuple[str, ...]  # steps whose notebook it carries


@dataclass(frozen=True)
class Setup:
    notebooks: dict[str, str]  # step -> its notebook as canonical JSON
    environments: dict[str, Environment]  # image -> its environment task (none when nothing is installed)
    images: dict[str, str]  # step -> image
    runtime: str  # the version of kale-magic that compiles (and so must run) the steps
    # step -> the environment's archives it unpacks before it starts (what it imports; the rest on import)
    unpacks: dict[str, tuple[str, ...]] = field(default_factory=dict)

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
    environments, unpacks = {}, {}
    for n, image in enumerate(dict.fromkeys(images.values())):
        steps = [name for name in plan.steps if images[name] == image]
        if not opts.install_packages and not carried.intersection(steps):
            continue
        requirements = Requirements(())
        if opts.install_packages:
            requirements = Requirements((("kfp", _kfp_version()),))  # the steps run kfp's executor from it
        for name in steps:
            own = _requirements(plan, plan.steps[name], opts) if opts.install_packages else Requirements(())
            requirements |= own
            # at start: what its code (and its values' backends) imports, and what the runtime loads before
            # the code runs; the rest of the runtime's closure when first imported
            code = _requirements(plan, plan.steps[name], opts, runtime=False) if opts.install_packages else own
            unpacks[name] = tuple(dict.fromkeys(archive_name(d) for d in ("_common", "kfp", SELF, *RUNTIME_STARTUP,
                                                                         *(p[0] for p in code.pins))))
        function = "kale_environment" if n == 0 else f"kale_environment_{n + 1}"
        environments[image] = Environment(function, image, requirements, tuple(s for s in steps if s in carried))
    return Setup(notebooks, environments, images, runtime_version(), unpacks)


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
    if opts.snapshot_url and opts.snapshot_url.endswith(".zst"):  # unpacking the snapshot's pack
        modules.add("zstandard")
    return step_requirements(sources, modules, opts.workspace, where=f"step '{step.name}'", runtime=runtime)
