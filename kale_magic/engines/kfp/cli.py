"""The KFP engine's ``kale-magic`` subcommands: ``compile`` (the pipeline YAML) and ``image`` (a step image).

The CLI hands over ``plan_file(path, pipeline=None, params=None)``, its planner of a notebook file,
returning (plan, the notebook's ``%config Kale.*`` settings, warnings); everything else is this engine's.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path


def add_commands(subcommands, plan_file) -> None:
    compile_ = subcommands.add_parser("compile", help="build the KFP pipeline YAML from the cell sources, "
                                                      "without running them")
    compile_.add_argument("notebook", help="notebook annotated with the magics or with Kale's tags")
    compile_.add_argument("-o", "--output", help="YAML file to write (default: "
                                                 ".kale/pipelines/PIPELINE.yaml next to the notebook)")
    compile_.add_argument("--pipeline", help="pipeline name")
    compile_.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                          help="change a parameter's default (repeatable)")
    compile_.set_defaults(func=lambda args: compile_command(args, plan_file))

    image_ = subcommands.add_parser("image", help="a step image with the notebook's libraries (kernel's "
                                                  "versions), kfp and this kale-magic: Dockerfile, built when "
                                                  "Docker answers")
    image_.add_argument("notebook", help="notebook annotated with the magics or with Kale's tags")
    image_.add_argument("-t", "--tag", required=True, help="the image's name, e.g. registry.example/team/steps:1")
    image_.add_argument("--base", help="base image (default: python:X.Y, the kernel's Python)")
    image_.add_argument("--dir", help="where to write the build context (default: .kale/images/TAG)")
    image_.add_argument("--network", help="docker build --network (e.g. host)")
    image_.add_argument("--no-build", action="store_true", help="only write the build context")
    image_.set_defaults(func=lambda args: image_command(args, plan_file))


def compile_command(args, plan_file) -> int:
    require_kfp()  # first, in one line: before any warning about the notebook
    path = Path(args.notebook)
    plan, config, warnings = plan_file(path, pipeline=args.pipeline, params=args.param)
    config = kfp_settings(config)
    for warning in warnings:
        print(f"kale-magic: warning: {warning}", file=sys.stderr)
    written = compile_yaml(plan, args.output, config)
    print(f"wrote {written} ({len(plan.steps)} steps)")
    return 0


def require_kfp() -> None:
    """Say how to install what compiling needs when kfp is missing."""
    import importlib.util

    from ...errors import KaleError

    if importlib.util.find_spec("kfp") is None:
        raise KaleError(f"compiling a pipeline needs Kubeflow Pipelines' kfp: {kfp_install_line()}")


def kfp_install_line() -> str:
    """``pip install -e '.[kfp]'`` for a checkout installed in editable mode, else the package from an index."""
    import json
    from importlib import metadata

    try:
        direct = json.loads(metadata.distribution("kale-magic").read_text("direct_url.json") or "{}")
    except metadata.PackageNotFoundError:
        direct = {}
    if direct.get("dir_info", {}).get("editable"):
        folder = direct["url"].removeprefix("file://")
        where = "." if Path(folder).resolve() == Path.cwd().resolve() else folder
        return f"pip install -e '{where}[kfp]'"
    return "pip install 'kale-magic[kfp]'"


def kfp_settings(config: dict) -> dict:
    """The notebook's settings by their bare names: ``%config Kfp.NAME`` lines over the old ``Kale.NAME``."""
    return {**{name: value for name, value in config.items() if "." not in name},
            **{name[len("Kfp."):]: value for name, value in config.items() if name.startswith("Kfp.")}}


def compile_yaml(plan, output, config: dict):
    """The KFP compiler with the notebook's ``%config Kale.*`` settings that concern it."""
    from ...errors import MissingDependency

    bundles: list = []
    notes: list = []
    try:
        from .compiler import CompileOptions, compile_pipeline

        written = compile_pipeline(plan, output, CompileOptions.from_settings(config), bundles=bundles, notes=notes)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] == "kfp":
            raise MissingDependency("kfp", "Compiling a pipeline") from None
        raise
    from .delivery import publish_bundle

    for bundle in bundles:  # the runtime the YAML imports: published where a root is configured
        if config.get("pipeline_root"):
            publish_bundle(bundle)
        else:
            print(f"kale-magic: warning: the steps read kale-magic's runtime from {bundle.url}, which nothing "
                  "published: set Kfp.pipeline_root (with the store's credentials) to publish it as the YAML "
                  "is written, or run the notebook with %kale_run", file=sys.stderr)
    for note in notes:  # advice, not a warning: the YAML runs as it is
        print(f"kale-magic: {note}", file=sys.stderr)
    return written


def image_command(args, plan_file) -> int:
    """A Dockerfile (and, with a Docker daemon, the image) holding everything the notebook's steps need."""
    from ...layout import KaleDir
    from .compiler import CompileOptions
    from .image import build, write_context

    path = Path(args.notebook)
    plan, config, _ = plan_file(path)
    config = kfp_settings(config)
    options = CompileOptions.from_settings({**config, "workspace": path.resolve().parent})
    folder = Path(args.dir) if args.dir else KaleDir(path.resolve().parent).path / "images" / _file_name(args.tag)
    context = write_context(plan, options, folder, base=args.base)
    print(f"wrote {context.dockerfile} ({len(context.requirements.pins)} pinned distributions)")
    if args.no_build:
        print(f"build it with: docker build -t {args.tag} {folder}")
        return 0
    build(context, args.tag, network=args.network)
    print(f"built {args.tag}: use it with %config Kfp.base_image = {args.tag!r} and "
          "%config Kfp.install_packages = False")
    return 0


def _file_name(tag: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", tag).strip("-") or "image"
