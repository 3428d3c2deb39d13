"""How a Kubeflow step gets its Python environment on a stock image, installing once per pipeline run.

The compiled pipeline starts with one ``kale-environment`` task per step image. It runs the kfp runtime
install every lightweight component gets (``pip install kfp==<the compiling version> --no-deps``), then
``pip install --no-deps --target`` of the distributions the steps import, pinned to the kernel's versions
and minus those the image already has at that version, plus the exact kale-magic that compiled the
pipeline (its wheel, delivered through the pipeline root, or ``kale-magic==<version>`` from
``Kale.pip_index_urls``). It packs the result as one uncompressed tar, its output artifact. Each step
takes that artifact as an input and unpacks it before anything else; the step's own kfp runtime install
is the only pip it runs. With KFP caching on, later runs with the same requirements reuse the
environment without installing anything.

The task also refuses, in one sentence, an image whose Python minor version is not the kernel's: the
pinned binary wheels would not load there.

Both pieces of code here run before kale-magic is importable, so they use the standard library only and
are embedded in the component sources as text.
"""

from __future__ import annotations

import sys

ENVIRONMENT = "kale_environment"  # the step components' input, the environment task's output
TASK_NAME = "kale-environment"
ENV_DIR = "kale-environment"  # under the step's temporary folder

ENVIRONMENT_SOURCE = '''\
def {function}(environment: Output[Artifact]{runtime_arg}):
    """Install what the steps import, pinned to the notebook kernel's versions, and pack it for them."""
    import importlib.metadata, json, os, subprocess, sys, tarfile, tempfile
    python = {python!r}
    here = "%d.%d" % sys.version_info[:2]
    if here != python:
        raise SystemExit(f"the step image {image!r} runs Python {{here}} but the notebook's kernel runs Python "
                         f"{{python}}: choose an image with Python {{python}} (Kale.base_image or --image)")
    requirements = {requirements!r}

    def installed(line):
        name, _, version = line.partition("==")
        try:
            return importlib.metadata.version(name) == version
        except importlib.metadata.PackageNotFoundError:
            return False

    missing = [line for line in requirements if not installed(line)]
    runtime = {runtime_expr}
    if runtime and not installed({runtime_pin!r}):
        missing.append(runtime)
    target = tempfile.mkdtemp(prefix="kale-environment-")
    if missing:
        command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-warn-script-location",
                   "--disable-pip-version-check", "--target", target, *{pip_options!r}, *missing]
        print("installing", len(missing), "of", len(requirements) + 1, "distributions:", " ".join(missing),
              flush=True)
        subprocess.run(command, check=True)
    with tarfile.open(environment.path, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(target, arcname=".")
    environment.metadata["installed"] = sorted(line.partition("==")[0] for line in missing)
'''

STEP_PREAMBLE = '''\
    import os as _os, site as _site, sys as _sys, tarfile as _tarfile, tempfile as _tempfile
    _env = _tempfile.mkdtemp(prefix="kale-environment-")
    with _tarfile.open(kale_environment.path) as _tar:
        _tar.extractall(_env)
    _sys.path.insert(0, _env)
    _site.addsitedir(_env)  # its .pth files
    _os.environ["PYTHONPATH"] = _os.pathsep.join(filter(None, [_env, _os.environ.get("PYTHONPATH")]))
'''


def kernel_python() -> str:
    return "%d.%d" % sys.version_info[:2]


def environment_source(function: str, requirements: list[str], image: str, runtime_pin: str,
                       runtime_artifact: bool, pip_options: list[str]) -> str:
    """The environment task's component function, with everything it installs written into it."""
    return ENVIRONMENT_SOURCE.format(
        function=function, python=kernel_python(), image=image, requirements=list(requirements),
        runtime_arg=", runtime: Input[Artifact]" if runtime_artifact else "",
        runtime_expr="runtime.path" if runtime_artifact else repr(f"kale-magic=={runtime_pin}"),
        runtime_pin=f"kale-magic=={runtime_pin}", pip_options=list(pip_options))


def pip_index_options(index_urls: list[str], trusted_hosts: list[str] | None = None) -> list[str]:
    """pip's options for ``Kale.pip_index_urls``: the first is the index, the others extra indexes."""
    options = []
    for i, url in enumerate(index_urls):
        options += ["--index-url" if i == 0 else "--extra-index-url", url]
    for host in trusted_hosts or ():
        options += ["--trusted-host", host]
    return options
