"""``kale-magic image``: a step image that already holds everything, for clusters that cannot install.

The image is the stock Python image of the kernel's version with the distributions the notebook's steps
import, pinned to the kernel's versions (the same list the ``kale-environment`` task installs), kfp's
runtime at the compiling version, and this exact kale-magic (its wheel, see :mod:`.wheel`). Use it with
``Kfp.base_image`` and ``Kfp.install_packages = False``: the pipeline then has no environment task and
its steps install nothing (with installs left on, the environment task finds everything in the image
and installs nothing either).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ...errors import EngineError
from ...plan import Plan
from .bootstrap import kernel_python, pip_index_options
from .requirements import Requirements

DOCKERFILE = """\
# Written by kale-magic image: the notebook's libraries at the kernel's versions, kfp and kale-magic {runtime}.
FROM {base}
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
COPY requirements.txt {wheel} /tmp/kale-image/
RUN python3 -m pip install --quiet --no-deps -r /tmp/kale-image/requirements.txt /tmp/kale-image/{wheel} \\
    && rm -rf /tmp/kale-image
LABEL io.kale-magic.runtime="{runtime}"
"""


@dataclass(frozen=True)
class ImageContext:
    folder: Path
    requirements: Requirements

    @property
    def dockerfile(self) -> Path:
        return self.folder / "Dockerfile"


def image_requirements(plan: Plan, options) -> Requirements:
    """Everything any step of ``plan`` imports, with kfp's runtime (installed without its dependencies,
    as every lightweight component does)."""
    import dataclasses

    import kfp

    from .setup import plan_setup

    # every run but a --no-snapshot one hands its steps a zstd pack of the workspace to unpack
    options = dataclasses.replace(options, snapshot_url=options.snapshot_url or "kale-snapshot.tar.zst")
    requirements = Requirements((("kfp", kfp.__version__),))
    for env in plan_setup(plan, options).environments.values():
        requirements |= env.requirements
    return requirements


def write_context(plan: Plan, options, folder: Path, base: str | None = None) -> ImageContext:
    """The build context: Dockerfile, requirements.txt and kale-magic's wheel."""
    from .wheel import build_wheel, runtime_version

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    requirements = image_requirements(plan, options)
    wheel = build_wheel(folder)
    lines = [*pip_index_options(options.pip_index_urls), *requirements.lines()]
    (folder / "requirements.txt").write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    (folder / "Dockerfile").write_text(DOCKERFILE.format(base=base or f"python:{kernel_python()}", wheel=wheel.name,
                                                         runtime=runtime_version()), encoding="utf-8")
    return ImageContext(folder, requirements)


def build(context: ImageContext, tag: str, network: str | None = None) -> None:
    """``docker build`` the context; EngineError when there is no Docker to build with."""
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "info"], capture_output=True).returncode != 0:
        raise EngineError(f"no Docker daemon answers here: build the image elsewhere with "
                          f"`docker build -t {tag} {context.folder}`")
    command = [docker, "build", "-t", tag, *(["--network", network] if network else []), str(context.folder)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise EngineError(f"docker build of {tag} failed: {(result.stderr or result.stdout).strip()[-2000:]}")

