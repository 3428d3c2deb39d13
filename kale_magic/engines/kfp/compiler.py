"""Plan → Kubeflow Pipelines v2 YAML, with the kfp SDK.

Each step becomes a lightweight Python component generated at compile time: a
function whose body hands the embedded step notebook to
:func:`kale_magic.engines.kfp.component.run_component`, with one ``Input``/``Output``
artifact per marshalled value, typed pipeline parameters, an HTML report and,
where the step computes metrics, an ``Output[Metrics]``.  The SDK does the rest
(component specs, DAG, resources, Kubernetes platform config, YAML).  An ``--if`` step sits in a
``dsl.If`` after a small gate task; a ``--foreach`` chain in a ``dsl.ParallelFor`` over the item indices
a small items task lists, its values fanned in to later steps with ``dsl.Collected``.

The output is deterministic: names are derived once, in :class:`Names`, and the
embedded notebooks are normalised, so the same plan compiles byte for byte to
the same file.  kfp is imported inside functions only.
"""

from __future__ import annotations

import hashlib
import json
import keyword
import linecache
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

from ...errors import ValidationError
from ...layout import KaleDir
from ...plan import Plan, StepPlan
from ...snapshot.remote import is_store
from .bootstrap import ENVIRONMENT, RUNTIME, archive_input, kernel_python
from .footprint import UNPACK_MOUNT
from .pip_args import check_setting, kfp_arguments

DEFAULT_BASE_IMAGE = f"python:{kernel_python()}"  # the kernel's Python: the pinned wheels load there
DEFAULT_ACCELERATOR = "nvidia.com/gpu"
# what the environment task asks the scheduler for (pip and tar of pandas + scikit-learn fit well inside); KFP's
# ResourceSpec has no ephemeral-storage field (pipeline_spec.proto), so its /tmp use cannot be requested
ENVIRONMENT_REQUESTS = {"cpu": "500m", "memory": "1Gi"}
REPORT = "kale_report"
METRICS = "kale_metrics"
SNAPSHOT = "kale_snapshot"  # the workspace snapshot input every step unpacks first
ITEM = "kale_item"  # a --foreach step's item index: the loop variable of its dsl.ParallelFor
NULLABLE = ("run_as_user",)  # settings whose None means something (the image's own user)
HOME = "/tmp/kale-home"  # writable for any user: pip's user installs, IPython's profile
TYPED_PARAMETERS = (bool, int, float, str)  # passed as is; anything else travels as literal text


@dataclass(frozen=True)
class CompileOptions:
    """Pipeline-wide settings (``Kale.*`` traits); per-step ones come from ``%%step``."""

    base_image: str = DEFAULT_BASE_IMAGE
    packages: tuple[str, ...] = ()  # pip-installed at step start; empty: the image has everything
    caching: bool = True
    rerun: bool = False  # %kale_run --no-cache: every step runs again (the environment, a function of its pins, may not)
    volumes: tuple[str, ...] = ()  # "PVC_NAME:/mount/path"
    secrets: tuple[str, ...] = ()  # "SECRET:KEY=ENV_VAR[,KEY=ENV_VAR]" or "SECRET:KEY"
    accelerator: str = DEFAULT_ACCELERATOR
    snapshot_url: str | None = None  # s3://.../kale-snapshots/<id>.tar.zst, imported once for all steps
    install_packages: bool = True  # False: the image holds kale-magic and every library, steps install nothing
    pip_index_urls: tuple[str, ...] = ()  # where steps install from (default: the image's pip configuration)
    run_as_user: int | None = 65534  # pods run as this non-root user (group 0, HOME in /tmp); None: the image's
    pipeline_root: str | None = None  # where KFP writes the run's artifacts (so run.load can read them)
    namespace: str | None = None  # the user's KFP namespace: its root is the default on a multi-user install
    default_root: str | None = None  # the namespace's default root, once looked up (delivery.default_root)
    workspace: Path | None = None  # the folder the snapshot carries: its modules are not installed
    max_parallel: int = 8  # Kale.max_parallel: the items of a --foreach loop running at once (its parallelism)
    mounts: tuple[tuple[str, str], ...] = field(init=False, default=())
    secret_envs: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = field(init=False, default=())

    @classmethod
    def from_settings(cls, settings: dict) -> "CompileOptions":
        """The options among ``settings`` (``Kale`` traits or a notebook's ``%config`` lines); others are ignored."""
        names = {f.name for f in fields(cls) if f.init}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()
                      if k in names and (v is not None or k in NULLABLE)})

    def __post_init__(self):
        for setting in ("packages", "pip_index_urls"):
            try:
                object.__setattr__(self, setting, tuple(check_setting(setting, getattr(self, setting))))
            except ValueError as exc:
                raise ValidationError(str(exc)) from None
        for url in self.pip_index_urls:
            _refuse_credentials(url)
        object.__setattr__(self, "mounts", tuple(_parse_volume(v) for v in self.volumes))
        object.__setattr__(self, "secret_envs", tuple(_parse_secret(s) for s in self.secrets))


def _refuse_credentials(url: str) -> None:
    """KFP stores and shows the compiled spec, and the driver logs it: an index's password must not be in it."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.username or parts.password:
        raise ValidationError(
            f"Kfp.pip_index_urls has credentials in {parts.scheme}://…@{parts.hostname}, which would be written "
            "into the pipeline YAML that KFP stores and shows: put the whole URL in a Kubernetes Secret and pass it "
            "as pip's variable instead (Kfp.secrets = ['SECRET:KEY=PIP_INDEX_URL'], Kfp.pip_index_urls = []).")


def _parse_volume(text: str) -> tuple[str, str]:
    pvc, _, mount = text.partition(":")
    if not pvc or not mount.startswith("/"):
        raise ValidationError(f"Volume {text!r} must look like PVC_NAME:/mount/path.")
    return pvc, mount


def _parse_secret(text: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    name, _, keys = text.partition(":")
    pairs = [item.partition("=") for item in keys.split(",") if item]
    if not name or not pairs:
        raise ValidationError(
            f"Secret {text!r} must look like SECRET_NAME:KEY=ENV_VAR[,KEY=ENV_VAR] (or SECRET_NAME:KEY).")
    return name, tuple((key, env or key) for key, _, env in pairs)


# names -------------------------------------------------------------------
def k8s_name(text: str, prefix: str = "kale") -> str:
    """A DNS-1123 label (lowercase letters, digits, '-'; starts with a letter; ≤ 63 chars)."""
    name = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    if not name or not name[0].isalpha():
        name = f"{prefix}-{name}".rstrip("-")
    return name[:63].rstrip("-")


def _identifier(text: str) -> str:
    name = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    if not name or not name[0].isalpha() or keyword.iskeyword(name):
        name = f"v_{name}"
    # the environment and importer tasks' names, and the environment's archive inputs
    if re.fullmatch(r"(kale_environment|importer)(_\d+)?|kale_env_\w+", name):
        name = f"{name}_s"
    return name


def _unique(name: str, taken: set[str], sep: str) -> str:
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name}{sep}{n}", n + 1
    taken.add(candidate)
    return candidate


class Names:
    """Every name the compiled pipeline uses, derived once from the plan, in plan order."""

    def __init__(self, plan: Plan):
        self.pipeline = k8s_name(plan.pipeline, prefix="pipeline")
        taken: set[str] = set()
        # kfp names a task after its component function: load_data -> "load-data"
        self.functions = {s: _unique(_identifier(s), taken, "_") for s in plan.steps}
        # the task that evaluates a step's --if (kfp's conditions compare one output with a constant)
        self.gates = {s: _unique(f"kale_gate_{_identifier(s)}", taken, "_")
                      for s, step in plan.steps.items() if step.options.condition}
        # the task that lists the items of a --foreach loop (each chain of same-clause steps has one)
        self.loops = {s: _unique(f"kale_items_{_identifier(s)}", taken, "_")
                      for s, step in plan.steps.items() if step.foreach and step.foreach.head == s}
        self.tasks = {s: f.replace("_", "-") for s, f in self.functions.items()}
        self.steps_by_task = {t: s for s, t in self.tasks.items()}

    @staticmethod
    def gate_io(step: StepPlan) -> dict[tuple[str, str], str]:
        """Argument names of a step's gate: (param | in, variable) -> name."""
        taken: set[str] = set()
        names = {("param", p): _unique(_identifier(p), taken, "_") for p in sorted(step.condition_parameters)}
        names.update({("in", t.name): _unique(f"in_{_identifier(t.name)}", taken, "_")
                      for t in _sorted(step.condition_inputs)})
        return names

    @staticmethod
    def items_io(step: StepPlan) -> str:
        """Argument name of the value a loop's items task reads (a parameter's, or the producer's artifact)."""
        loop = step.foreach
        return _identifier(loop.name) if loop.producer is None else f"in_{_identifier(loop.name)}"

    @staticmethod
    def io(step: StepPlan) -> dict[tuple[str, str], str]:
        """Component argument name for each (kind, variable): kind is param, in or out."""
        taken = {REPORT, METRICS, ITEM}
        names = {}
        for kind, variables in (("param", step.parameters), ("in", [t.name for t in step.inputs]),
                                ("out", [t.name for t in step.outputs])):
            for var in sorted(variables):
                base = _identifier(var) if kind != "in" else f"in_{_identifier(var)}"
                names[(kind, var)] = _unique(base, taken, "_")
        return names


def default_pipeline_file(plan: Plan) -> Path:
    """``.kale/pipelines/<pipeline>.yaml`` next to the notebook (or the working directory)."""
    base = plan.notebook_path.parent if plan.notebook_path else Path.cwd()
    return KaleDir(base).pipeline_file(Names(plan).pipeline)


# parameters ----------------------------------------------------------------
def _is_typed(value: object) -> bool:
    return type(value) in TYPED_PARAMETERS


def _argument(value: object, default: object) -> object:
    """A parameter value as KFP carries it: typed as is, anything else as Python literal text.

    Lists, dicts, tuples and None travel as text because the KFP SDK stores the
    numbers inside a list or dict as doubles (a step would see ``[3.0]`` where the
    notebook had ``[3]``) and has no tuple or None; the step decodes the text
    (:func:`kale_magic.engines.kfp.component.decode`), which also accepts JSON typed in the KFP UI.
    """
    from ...step.notebooks import literal

    return value if _is_typed(default) else literal(value)


def pipeline_arguments(plan: Plan, values: dict[str, object]) -> dict[str, object]:
    """The run's pipeline arguments, for every pipeline parameter."""
    return {name: _argument(values.get(name, default), default) for name, default in plan.parameters.items()}


# compile -----------------------------------------------------------------
def compile_pipeline(plan: Plan, path: Path | str | None = None,
                     options: CompileOptions | None = None, *, bundles: list | None = None,
                     imports: dict[tuple[str, str], str] | None = None, notes: list | None = None,
                     **settings) -> Path:
    """Write the KFP pipeline YAML for ``plan`` and return its path.

    The runtime bundles the YAML imports (:mod:`.delivery`) are published at once to a folder pipeline
    root (``kfp.local``); bundles for an object store are appended to ``bundles`` for the caller to
    publish with the upload. ``imports``: (producer, value) -> artifact URI, for the inputs of a partial
    run's steps that an earlier run made (:mod:`.reuse`). ``notes``: one-line advice for the user is appended
    there (:func:`.footprint.image_advice`). ``settings`` are :class:`CompileOptions` fields, for callers
    without an options object.
    """
    from google.protobuf import json_format
    from kfp import compiler

    from .delivery import check_container_specs, publish_bundle

    gated = [name for name, step in plan.steps.items() if step.foreach and step.options.condition]
    if gated:  # a gate per item inside a ParallelFor is not built: refused rather than run ungated
        from ...errors import KaleError

        raise KaleError(f"step '{gated[0]}' uses --if with --foreach, which kale-magic does not compile for "
                        "Kubeflow Pipelines; run it with --engine local, or test the condition inside the cell.")
    opts = options or CompileOptions(**settings)
    path = Path(path) if path else default_pipeline_file(plan)
    made: list = []

    def build_and_write():
        pipeline = build_pipeline(plan, opts, made, imports, notes)
        names = Names(plan)
        executors = {f"exec-{task}": step for step, task in names.tasks.items()}
        executors.update({f"exec-{f.replace('_', '-')}": step for step, f in names.loops.items()})
        check_container_specs(json_format.MessageToDict(pipeline.pipeline_spec), executors)
        path.parent.mkdir(parents=True, exist_ok=True)
        compiler.Compiler().compile(pipeline, str(path))

    # In a thread of its own: kfp's task setters (set_cpu_request, set_env_variable...) call inspect.stack()
    # (kfp/dsl/pipeline_task.py, _ensure_container_spec_exists), which reads every frame's source, and each
    # frame without a module file (a notebook cell, IPython's and runpy's) scans all of sys.modules; in a
    # kernel with torch loaded that was half of a compile. A new thread's stack holds only the compile.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="kale-compile") as pool:
        pool.submit(build_and_write).result()
    for item in made:
        if is_store(item.url):
            if bundles is not None:
                bundles.append(item)
        else:
            publish_bundle(item)
    return path


def runtime_root(opts: CompileOptions) -> str:
    """Where the runtime bundle goes: the pipeline root, else the one KFP uses for the namespace."""
    from .delivery import default_root

    return opts.pipeline_root or opts.default_root or default_root(opts.namespace)


def build_pipeline(plan: Plan, opts: CompileOptions, bundles: list | None = None,
                   imports: dict[tuple[str, str], str] | None = None, notes: list | None = None):
    """The kfp ``GraphComponent`` for the plan (compile it, or call it under ``kfp.local``); the runtime
    bundles it imports are appended to ``bundles``; ``imports``, ``notes``: see :func:`compile_pipeline`."""
    from kfp import dsl

    from .delivery import Bundle, bundle_url
    from .footprint import image_advice
    from .setup import bundle, plan_setup
    from .wheel import wheel_bytes, wheel_name

    names = Names(plan)
    setup = plan_setup(plan, opts)
    if notes is not None:
        notes.extend(filter(None, [image_advice(setup, plan.notebook_path)]))
    wheel = wheel_bytes() if opts.install_packages and setup.environments else b""
    contents = {image: bundle(setup, env, wheel, wheel_name(setup.runtime))
                for image, env in setup.environments.items()}
    imported = {image: Bundle(bundle_url(runtime_root(opts), content), content)
                for image, content in contents.items() if content}
    if bundles is not None:
        bundles.extend(dict.fromkeys(imported.values()))
    environments = {image: _environment_component(setup, env, opts, contents[image])
                    for image, env in setup.environments.items()}
    gates = condition_gates(plan)
    blocks = step_blocks(plan, gates)
    components = {s: _component(plan, plan.steps[s], names, opts, setup) for s in plan.steps}
    gate_components = {s: _component(plan, plan.steps[s], names, opts, setup, kind="gate") for s in names.gates}
    items_components = {s: _component(plan, plan.steps[s], names, opts, setup, kind="items") for s in names.loops}

    ios = {name: Names.io(step) for name, step in plan.steps.items()}

    def build(params):
        from .snapshot import snapshot_importer

        tasks = {}
        imported_values = {}
        snapshot = snapshot_importer(opts.snapshot_url) if opts.snapshot_url else None
        prepared = {}
        for image, component in environments.items():
            runtime = {RUNTIME: _runtime_importer(imported[image].url)} if image in imported else {}
            prepared[image] = component(**runtime)
            _apply_options(prepared[image], None, opts)

        def value(step, transfer):
            """``step``'s input: its producer's output (every item's, ``dsl.Collected``, from a loop ``step`` does
            not continue), or the artifact an earlier run saved (imported once)."""
            if transfer.producer in tasks:
                output = tasks[transfer.producer].outputs[ios[transfer.producer][("out", transfer.name)]]
                return dsl.Collected(output) if collected(plan, step, transfer.producer) else output
            key = (transfer.producer, transfer.name)
            if key not in imported_values:
                imported_values[key] = _value_importer(imports[key], transfer)
            return imported_values[key]

        def environment(name):
            """The environment's outputs step ``name`` takes: the runtime group's folder, and the archives of its
            own requirements' distributions (of every one when its imports cannot be known)."""
            if setup.environment(name) is None:
                return {}
            outputs = prepared[setup.images[name]].outputs
            return {ENVIRONMENT: outputs["environment"],
                    **{archive_input(a): outputs[archive_input(a)] for a in setup.receives.get(name, ())}}

        def make(name, step, item):
            io = ios[name]
            args = {io[("param", p)]: params[p] for p in step.parameters}
            if snapshot is not None:
                args[SNAPSHOT] = snapshot
            args.update(environment(name))
            args.update({io[("in", t.name)]: value(step, t) for t in step.inputs})
            if step.foreach:
                args[ITEM] = item
            task = components[name](**args)
            task.after(*(tasks[p] for p in step.parents))
            _apply_options(task, step, opts)
            _unpack_volume(task, setup, step, limited=bool(step.options.memory))
            tasks[name] = task

        def gate(name, step):
            io = Names.gate_io(step)
            args = {io[("param", p)]: params[p] for p in step.condition_parameters}
            args.update(environment(name))
            args.update({io[("in", t.name)]: value(step, t) for t in step.condition_inputs})
            task = gate_components[name](**args)
            task.after(*(tasks[p] for p in step.parents))
            _apply_options(task, None, opts, requests=False)
            _unpack_volume(task, setup, step)
            return task

        def listing(name, step):
            """The task that lists the loop's item indices (the value checked as the kernel checks it)."""
            loop = step.foreach
            argument = params[loop.name] if loop.producer is None else value(
                step, next(t for t in step.inputs if t.name == loop.name))
            task = items_components[name](**{Names.items_io(step): argument}, **environment(name))
            _apply_options(task, None, opts, requests=False)
            _unpack_volume(task, setup, step)
            return task

        def inside(prefix, item):
            """The steps whose blocks start with ``prefix``: its own steps and the blocks one level deeper (an
            --if block, or a --foreach loop), each after the steps and blocks it depends on."""
            depth = len(prefix)
            unit = {n: n if len(blocks[n]) == depth else blocks[n][depth]
                    for n in plan.steps if blocks[n][:depth] == prefix}
            needs = {u: set() for u in unit.values()}
            for name, own in unit.items():
                needs[own].update(unit[p] for p in plan.steps[name].parents if p in unit and unit[p] != own)
            for u in _dependency_order(needs, unit):
                if isinstance(u, str):
                    make(u, plan.steps[u], item)
                elif u[0] == "if":
                    with dsl.If(gate(u[1], plan.steps[u[1]]).output == "true", name=f"if {u[1]}"):
                        inside(prefix + (u,), item)
                else:
                    with dsl.ParallelFor(listing(u[1], plan.steps[u[1]]).output, parallelism=opts.max_parallel,
                                         name=f"foreach {u[1]}") as index:
                        inside(prefix + (u,), index)

        inside((), None)

    func = _pipeline_function(plan, build)
    root = opts.pipeline_root if opts.pipeline_root and is_store(opts.pipeline_root) else None
    return dsl.pipeline(name=names.pipeline, description=plan.description or None, pipeline_root=root)(func)


def _runtime_importer(url: str):
    """The runtime bundle at ``url`` as an artifact (call inside the pipeline function)."""
    from kfp import dsl

    task = dsl.importer(artifact_uri=url, artifact_class=dsl.Artifact, reimport=False,
                        metadata={"kale": "kale-magic runtime"})
    task.set_display_name("kale-magic runtime")
    return task.output


def _value_importer(uri: str, transfer):
    """A value an earlier run saved, as the artifact the consumer's input expects (call inside the pipeline
    function). ``reimport=False``: a later run importing the same URI reuses its ML Metadata artifact."""
    from kfp import dsl

    task = dsl.importer(artifact_uri=uri, artifact_class=getattr(dsl, _artifact(transfer.artifact_type)),
                        reimport=False, metadata={"kale": f"value '{transfer.name}' of step '{transfer.producer}'"})
    task.set_display_name(f"{transfer.name} from {transfer.producer}")
    return task.output


def _environment_component(setup, env, opts: CompileOptions, bundle: bytes):
    """The task that installs (once per run) what the steps on ``env.image`` import, from kale-magic's
    wheel and the notebooks too large for their own source (``bundle``, imported from the pipeline root)."""
    from kfp import dsl

    from .bootstrap import environment_source, pip_index_options
    from .wheel import wheel_name

    version = setup.runtime
    install = opts.install_packages
    source = environment_source(env.function, env.image, env.requirements.lines(),
                                f"kale-magic=={version}" if install else "", wheel_name(version), bundle,
                                pip_index_options(opts.pip_index_urls), env.archives)
    component = dsl.component(_define(source, env.function), base_image=env.image, install_kfp_package=install,
                              **kfp_arguments((), opts.pip_index_urls))
    return _with_env(component, opts)


def _with_env(component, opts: CompileOptions):
    """Environment variables of every task of ``component``: a writable HOME for pods that run as a non-root
    user. Set on the component once (kfp's per-task setter inspects the call stack each time, which is most
    of the compile time of a large pipeline)."""
    env = {}
    if opts.run_as_user is not None:
        env["HOME"] = HOME
    if env:
        component.component_spec.implementation.container.env = env
    return component


def _pipeline_function(plan: Plan, build):
    """A function with the typed, defaulted signature kfp reads the pipeline inputs from."""
    defaults = {n: _argument(v, v) for n, v in plan.parameters.items()}
    params = ", ".join(f"{n}: {type(v).__name__} = __kale_defaults[{n!r}]" for n, v in defaults.items())
    source = f"def pipeline({params}):\n    __kale_build(locals())\n"
    namespace = {"__kale_defaults": defaults, "__kale_build": build}
    exec(compile(source, "<kale-pipeline>", "exec", dont_inherit=True), namespace)
    return namespace["pipeline"]


def condition_gates(plan: Plan) -> dict[str, tuple[str, ...]]:
    """Each step's ``--if`` steps (its own and its ancestors'), outermost first: the ``dsl.If`` blocks it sits
    in.  KFP nests blocks and lets no task outside one depend on a task inside, so these must form a chain
    (each a descendant of the one before); two unrelated ones above one step are refused in one sentence."""
    order = list(plan.steps)
    ancestors: dict[str, set[str]] = {}
    gates: dict[str, tuple[str, ...]] = {}
    problems = []
    for name, step in plan.steps.items():
        ancestors[name] = set(step.parents).union(*(ancestors[p] for p in step.parents))
        found = {g for p in step.parents for g in gates[p]} | ({name} if step.options.condition else set())
        chain = tuple(sorted(found, key=order.index))
        loose = [(a, b) for a, b in zip(chain, chain[1:]) if a not in ancestors[b]]
        if loose:
            a, b = loose[0]
            problems.append(f"step '{name}' runs after the --if steps '{a}' and '{b}', neither of which runs after "
                            f"the other, which Kubeflow's nested conditions cannot express: add --after {a} to the "
                            f"%%step {b} line, or test both conditions in one --if.")
        gates[name] = chain
    if problems:
        raise ValidationError(*problems)
    return gates


def step_blocks(plan: Plan, gates: dict[str, tuple[str, ...]]) -> dict[str, tuple[tuple[str, str], ...]]:
    """Each step's blocks, outermost first: its ``--if`` blocks (``("if", step)``), then, for a ``--foreach``
    step, its loop (``("loop", head)``: the chain of same-clause steps shares one ``dsl.ParallelFor``).  A step
    continuing a loop that runs after an ``--if`` step its loop's first step does not is refused in one sentence:
    its items would sit in another block than the loop's."""
    out: dict[str, tuple[tuple[str, str], ...]] = {}
    problems = []
    for name, step in plan.steps.items():
        if not step.foreach:
            out[name] = tuple(("if", g) for g in gates[name])
            continue
        head = step.foreach.head
        extra = [g for g in gates[name] if g not in gates[head]]
        if extra:
            problems.append(f"step '{name}' continues the items of step '{head}' but runs after the --if step "
                            f"'{extra[0]}', which '{head}' does not, so Kubeflow cannot run them in one loop: add "
                            f"--after {extra[0]} to the %%step {head} line.")
        out[name] = tuple(("if", g) for g in gates[head]) + (("loop", head),)
    if problems:
        raise ValidationError(*problems)
    return out


def collected(plan: Plan, step: StepPlan, producer: str) -> bool:
    """Whether ``step`` receives ``producer``'s values as the list of its items' (``dsl.Collected``): the
    producer loops and ``step`` does not continue its items (a producer a partial run left out: imported)."""
    return producer in plan.steps and bool(plan.steps[producer].foreach) and not step.itemwise(producer, plan)


def _dependency_order(needs: dict, unit: dict[str, object]) -> list:
    """The units of one block level (steps and inner blocks) in plan order, each after those it needs; a
    loop that a step outside it must run in the middle of is refused in one sentence."""
    done: list = []
    left = list(needs)
    while left:
        ready = next((u for u in left if needs[u] <= set(done)), None)
        if ready is None:
            loop = next(u for u in left if not isinstance(u, str) and u[0] == "loop")
            inner = [n for n, u in unit.items() if u == loop]
            outer = next(n for n, u in unit.items() if u in left and u != loop and loop in needs[u])
            raise ValidationError(
                f"step '{outer}' reads the lists of the --foreach loop of step '{loop[1]}' (steps "
                f"{', '.join(inner)}) and a step of that loop runs after it, which one Kubeflow ParallelFor cannot "
                f"express: give the steps after '{outer}' another item name, starting a new loop.")
        done.append(ready)
        left.remove(ready)
    return done


def _component(plan: Plan, step: StepPlan, names: Names, opts: CompileOptions, setup, kind: str = "step"):
    """The step's component; (``kind`` "gate") the one that evaluates its ``--if`` and returns "true" or why
    not; ("items") the one that lists the item indices of the loop it starts."""
    from kfp import dsl

    from .bootstrap import STEP_BOOTSTRAP
    from .setup import RUNTIME_ARCHIVES

    if kind == "gate":
        function = names.gates[step.name]
        source = gate_source(plan, step, function, setup)
    elif kind == "items":
        function = names.loops[step.name]
        source = items_source(plan, step, function, setup)
    else:
        function = names.functions[step.name]
        source = component_source(plan, step, function, bool(opts.snapshot_url), setup)
    func = _define(source, function)
    environment = setup.environment(step.name) is not None
    component = dsl.component(func, base_image=setup.images[step.name],
                              **kfp_arguments(opts.packages, opts.pip_index_urls),
                              install_kfp_package=opts.install_packages and not environment)
    if environment:  # the environment carries kfp: unpack it, then run kfp's executor from it
        container = component.component_spec.implementation.container
        size, why_not = setup.volumes[step.name]
        unpack = {"unpack": list(setup.unpacks[step.name]), "whole": setup.whole.get(step.name, ""),
                  "memory": UNPACK_MOUNT if size else "", "size": size, "disk": why_not,
                  # what only the step's own code needs unpacks in the background (bootstrap.py)
                  "later": [a for a in setup.unpacks[step.name] if a not in RUNTIME_ARCHIVES]}
        container.command = ["python3", "-c", STEP_BOOTSTRAP, json.dumps(unpack, sort_keys=True),
                             *container.command]
    return _with_env(component, opts)


def component_source(plan: Plan, step: StepPlan, function: str, snapshot: bool, setup) -> str:
    """Python source of the step's component function (kfp embeds it in the YAML); ``setup``: the
    :class:`~.setup.Setup` that says whether an environment task prepares it and carries its notebook."""
    from .bootstrap import NOTEBOOKS, STEP_PREAMBLE

    io = Names.io(step)
    kinds = {t.name: t.artifact_type for t in (*step.inputs, *step.outputs)}
    environment = setup.environment(step.name) is not None
    signature = [f"{io[('param', p)]}: {_param_type(plan.parameters[p])}" for p in sorted(step.parameters)]
    signature += [f"{io[('in', t.name)]}: {_input(plan, step, t)}" for t in _sorted(step.inputs)]
    signature += [f"{io[('out', t.name)]}: Output[{_artifact(kinds[t.name])}]" for t in _sorted(step.outputs)]
    if step.foreach:
        signature.append(f"{ITEM}: int")
    if snapshot:
        signature.append(f"{SNAPSHOT}: Input[Artifact]")
    if environment:
        signature += _environment_inputs(setup, step.name)
    signature.append(f"{REPORT}: Output[HTML]")
    if step.metrics:
        signature.append(f"{METRICS}: Output[Metrics]")

    def mapping(kind, variables):
        return "{" + ", ".join(f"{v!r}: {io[(kind, v)]}" for v in sorted(variables)) + "}"

    text = setup.notebooks[step.name]
    if setup.carried(step.name):
        digest = hashlib.sha256(text.encode()).hexdigest()  # in the source: KFP's cache key sees the code
        notebook = f"_os.path.join(_env, {NOTEBOOKS!r}, {step.name + '.json'!r})"
        notebook_arguments = [f"notebook_file={notebook}", f"notebook_sha256={digest!r}"]
    else:
        notebook_arguments = [f"notebook={text!r}"]
    text_params = tuple(p for p in sorted(step.parameters) if not _is_typed(plan.parameters[p]))
    arguments = [
        f"step={step.name!r}",
        *notebook_arguments,
        f"parameters={mapping('param', step.parameters)}",
        f"text_parameters={text_params!r}",
        f"inputs={mapping('in', [t.name for t in step.inputs])}",
        f"producers={ {t.name: t.producer for t in _sorted(step.inputs)}!r}",
        f"outputs={mapping('out', [t.name for t in step.outputs])}",
        f"backends={ {t.name: t.backend for t in _sorted(step.outputs)}!r}",
        f"report={REPORT}",
        f"metrics={METRICS if step.metrics else None}",
        f"python={kernel_python()!r}",
        f"runtime={setup.runtime!r}",
    ]
    if snapshot:
        arguments.append(f"snapshot={SNAPSHOT}")
    if step.foreach:
        arguments.append(f"item={ITEM}")
    body = "".join(f"        {a},\n" for a in arguments)
    return (f"def {function}({', '.join(signature)}):\n"
            + (STEP_PREAMBLE if environment else "")
            + "    from kale_magic.engines.kfp.component import run_component\n"
            f"    run_component(\n{body}    )\n")


def gate_source(plan: Plan, step: StepPlan, function: str, setup) -> str:
    """Python source of the component that evaluates ``step``'s ``--if`` on the values it reads (the same
    evaluation as the kernel's and the local engine's); it returns "true", or the reason it is false."""
    from .bootstrap import STEP_PREAMBLE

    io = Names.gate_io(step)
    environment = setup.environment(step.name) is not None
    signature = [f"{io[('param', p)]}: {_param_type(plan.parameters[p])}" for p in sorted(step.condition_parameters)]
    signature += [f"{io[('in', t.name)]}: {_input(plan, step, t)}" for t in _sorted(step.condition_inputs)]
    if environment:
        signature += _environment_inputs(setup, step.name)
    params = "{" + ", ".join(f"{p!r}: {io[('param', p)]}" for p in sorted(step.condition_parameters)) + "}"
    inputs = "{" + ", ".join(f"{t.name!r}: {io[('in', t.name)]}" for t in _sorted(step.condition_inputs)) + "}"
    text_params = tuple(p for p in sorted(step.condition_parameters) if not _is_typed(plan.parameters[p]))
    arguments = [
        f"step={step.name!r}",
        f"condition={step.options.condition!r}",
        f"parameters={params}",
        f"text_parameters={text_params!r}",
        f"inputs={inputs}",
        f"producers={ {t.name: t.producer for t in _sorted(step.condition_inputs)}!r}",
        f"python={kernel_python()!r}",
        f"runtime={setup.runtime!r}",
    ]
    body = "".join(f"        {a},\n" for a in arguments)
    return (f"def {function}({', '.join(signature)}) -> str:\n"
            + (STEP_PREAMBLE if environment else "")
            + "    from kale_magic.engines.kfp.component import run_gate\n"
            f"    return run_gate(\n{body}    )\n")


def items_source(plan: Plan, step: StepPlan, function: str, setup) -> str:
    """Python source of the component that lists the item indices of ``step``'s loop ``[0, 1, ...]`` (the
    ``dsl.ParallelFor`` iterates over them; each item loads the value and takes its item, so every item type
    stays exact): the value is checked as the kernel and the local engine check it (type, limit)."""
    from .bootstrap import STEP_PREAMBLE

    loop = step.foreach
    argument = Names.items_io(step)
    environment = setup.environment(step.name) is not None
    if loop.producer is None:
        signature = [f"{argument}: {_param_type(plan.parameters[loop.name])}"]
        value = [f"value={argument}", f"text={not _is_typed(plan.parameters[loop.name])!r}"]
    else:
        transfer = next(t for t in step.inputs if t.name == loop.name)
        signature = [f"{argument}: {_input(plan, step, transfer)}"]
        value = [f"artifact={argument}", f"producer={loop.producer!r}"]
    if environment:
        signature += _environment_inputs(setup, step.name)
    arguments = [f"step={step.name!r}", f"name={loop.name!r}", *value, f"python={kernel_python()!r}",
                 f"runtime={setup.runtime!r}"]
    body = "".join(f"        {a},\n" for a in arguments)
    return (f"def {function}({', '.join(signature)}) -> List[int]:\n"
            + (STEP_PREAMBLE if environment else "")
            + "    from kale_magic.engines.kfp.component import run_items\n"
            f"    return run_items(\n{body}    )\n")


def _environment_inputs(setup, step: str) -> list[str]:
    """The component arguments of the environment a step takes (see the ``environment`` of :func:`build_pipeline`)."""
    archives = setup.receives.get(step, ())
    return [f"{ENVIRONMENT}: Input[Artifact]", *(f"{archive_input(a)}: Input[Artifact]" for a in archives)]


def _input(plan: Plan, step: StepPlan, transfer) -> str:
    """The annotation of an input: one artifact, or the list of a loop's items' (``dsl.Collected``)."""
    kind = _artifact(transfer.artifact_type)
    return f"Input[List[{kind}]]" if collected(plan, step, transfer.producer) else f"Input[{kind}]"


def _sorted(transfers):
    return sorted(transfers, key=lambda t: t.name)


def _param_type(default: object) -> str:
    return type(default).__name__ if _is_typed(default) else "str"


def _artifact(artifact_type: str) -> str:
    return artifact_type if artifact_type in ("Dataset", "Model") else "Artifact"


def _define(source: str, function: str):
    """Define ``function`` from generated source, registered with linecache so kfp can read it back."""
    from typing import List

    from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

    filename = f"<kale-step-{function}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace = {"Input": Input, "Output": Output, "Artifact": Artifact, "Dataset": Dataset,
                 "Model": Model, "HTML": HTML, "Metrics": Metrics, "List": List}
    exec(compile(source, filename, "exec", dont_inherit=True), namespace)
    return namespace[function]


def _unpack_volume(task, setup, step: StepPlan, limited: bool = False) -> None:
    """The memory-backed volume ``task`` (``step``'s, its ``--if`` gate's or its loop's listing) unpacks its
    environment into (:func:`.footprint.unpack_volume`), and as much memory requested unless the task has
    ``--memory`` (``limited``). emptyDir mounts came in KFP 2.3 (kubeflow/pipelines#10913; driver ``k8s.go``),
    before the resource requests every pipeline with an environment task already needs (2.4, :mod:`.versions`)."""
    from kfp import kubernetes

    size = setup.volumes.get(step.name, (0, ""))[0]
    if not size:
        return
    kubernetes.empty_dir_mount(task, volume_name="kale-unpacked", mount_path=UNPACK_MOUNT, medium="Memory",
                               size_limit=f"{size >> 20}Mi")
    if not limited:
        task.set_memory_request(f"{size >> 20}Mi")


def _apply_options(task, step: StepPlan | None, opts: CompileOptions, requests: bool = True) -> None:
    """Per-step options from ``%%step``; ``step`` None for the environment task, which obeys the pipeline-wide
    ones as every step does: caching, volumes and secrets (its pip may need the index's credentials), and for
    an ``--if`` gate (``requests`` False: it only loads a few values, and asks for no resources of its own)."""
    from kfp import kubernetes

    if opts.run_as_user is not None:  # Pod Security "restricted" rejects root pods; pip needs a writable HOME
        kubernetes.set_security_context(task, run_as_user=opts.run_as_user, run_as_group=0, run_as_non_root=True)
    for pvc, mount in opts.mounts:
        kubernetes.mount_pvc(task, pvc_name=pvc, mount_path=mount)
    for secret, pairs in opts.secret_envs:
        kubernetes.use_secret_as_env(task, secret_name=secret, secret_key_to_env=dict(pairs))
    if step is None:
        task.set_caching_options(opts.caching)
        if requests:
            task.set_cpu_request(ENVIRONMENT_REQUESTS["cpu"]).set_memory_request(ENVIRONMENT_REQUESTS["memory"])
        return
    o = step.options
    task.set_display_name(step.name)
    task.set_caching_options(opts.caching and not opts.rerun and not o.no_cache)
    if o.cpu:
        task.set_cpu_request(o.cpu).set_cpu_limit(o.cpu)
    if o.memory:
        task.set_memory_request(o.memory).set_memory_limit(o.memory)
    if o.gpu:
        task.set_accelerator_type(opts.accelerator).set_accelerator_limit(o.gpu)
    if o.retries:
        task.set_retry(num_retries=o.retries)
    if o.timeout:
        kubernetes.set_timeout(task, int(o.timeout))
    for key, value in o.env:  # %%step --env: on this step's container only
        task.set_env_variable(key, value)
    for secret in o.secrets:  # %%step --secret: the Secret's key, never its value, is in the YAML
        kubernetes.use_secret_as_env(task, secret_name=secret.name, secret_key_to_env={secret.key: secret.variable})
