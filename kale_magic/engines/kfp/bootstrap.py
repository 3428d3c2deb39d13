"""How a Kubeflow step gets its Python environment on a stock image, installing once per pipeline run.

The compiled pipeline starts with one ``kale-environment`` task per step image. Like every lightweight
component it first gets kfp's runtime install (``pip install kfp==<the compiling version> --no-deps``).
Then it runs ``pip install --no-deps --target`` of the distributions the steps import, pinned to the
kernel's versions and minus those the image already has at that version, plus the exact kale-magic
that compiled the pipeline, and packs the result as one gzip (level 1) tar: its output artifact, which
also holds kfp's runtime. Each step takes that artifact as an input and unpacks it before anything else,
then runs kfp's executor from it: a step runs no pip at all. With KFP caching on, a later run with the same requirements reuses the
environment and installs nothing at all.

kale-magic is on no index, so the pipeline carries it without putting it in any container spec (see
:mod:`kale_magic.engines.kfp.delivery`): its wheel, and the notebooks of steps too large to sit in their
component's source, travel as one xz-compressed tar, the runtime bundle, imported from the pipeline
root as the task's ``kale_runtime`` input. The task's source names the bundle's digest, which also puts
it in KFP's cache key.

The environment task refuses, in one sentence, an image whose Python minor version is not the kernel's:
the pinned binary wheels would not load there. Both pieces of code here run before kale-magic is
importable, so they use the standard library only and are embedded in the component sources as text.
"""

from __future__ import annotations

import hashlib
import io
import lzma
import sys
import tarfile

ENVIRONMENT = "kale_environment"  # the steps' input, the environment task's output
NOTEBOOKS = "kale-notebooks"  # folder of the environment holding the carried step notebooks
RUNTIME = "kale_runtime"  # the environment task's input: the runtime bundle

ENVIRONMENT_SOURCE = '''\
def {function}({runtime_input}environment: Output[Artifact]):
    """Install what the steps import, pinned to the notebook kernel's versions, and pack it for them."""
    import hashlib, importlib.metadata, io, os, shutil, subprocess, sys, tarfile, tempfile
    python = {python!r}
    here = "%d.%d" % sys.version_info[:2]
    if here != python:
        raise SystemExit(f"the step image {image!r} runs Python {{here}} but the notebook's kernel runs Python "
                         f"{{python}}: choose an image with Python {{python}} (Kale.base_image or --image)")
    carried = tempfile.mkdtemp(prefix="kale-runtime-")
    if {digest!r}:
        with open({runtime_name}.path, "rb") as bundle:
            data = bundle.read()
        if hashlib.sha256(data).hexdigest() != {digest!r}:
            raise SystemExit("the pipeline's kale-magic runtime bundle is not the one compiled: compile the "
                             "pipeline again")
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:xz") as tar:
            tar.extractall(carried)
    requirements = {requirements!r}

    def installed(line):
        name, _, version = line.partition("==")
        try:
            return importlib.metadata.version(name) == version
        except importlib.metadata.PackageNotFoundError:
            return False

    # kfp always: this pod's kfp may be the one kfp's wrapper just installed, which the steps' pods lack
    missing = [line for line in requirements if line.startswith("kfp==") or not installed(line)]
    runtime = {runtime!r}
    if runtime and not installed(runtime):
        missing.append(os.path.join(carried, {wheel!r}))
    target = tempfile.mkdtemp(prefix="kale-environment-")
    if missing:
        print("installing", len(missing), "distributions:", " ".join(os.path.basename(m) for m in missing),
              flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-warn-script-location",
                        "--disable-pip-version-check", "--target", target, *{pip_options!r}, *missing], check=True)
    if os.path.isdir(os.path.join(carried, {notebooks!r})):
        shutil.move(os.path.join(carried, {notebooks!r}), target)
    # gzip at level 1: a third of the bytes for every step's launcher to download, unpacked at disk speed
    with tarfile.open(environment.path, "w:gz", compresslevel=1, format=tarfile.PAX_FORMAT) as tar:
        tar.add(target, arcname=".")
    environment.metadata["installed"] = sorted(os.path.basename(line).partition("==")[0] for line in missing)
'''

STEP_PREAMBLE = '''\
    import os as _os, site as _site
    _env = _os.environ["KALE_ENVIRONMENT"]  # unpacked by the step's bootstrap, on sys.path through PYTHONPATH
    _site.addsitedir(_env)  # its .pth files
'''

# Runs first in a step's container, before kfp's executor (``python3 -c STEP_BOOTSTRAP <kfp's command>``): it
# unpacks the environment the launcher downloaded, where kfp's own ``Artifact.path`` puts it (gs://, minio://,
# s3:// under /gcs, /minio, /s3: launcher_v2.go's LocalPathForURI; a local path under kfp.local), then execs
# kfp's command with the environment on PYTHONPATH, so the kfp it carries runs the executor: no pod installs
# kfp from an index.
STEP_BOOTSTRAP = '''\
import json, os, sys, tarfile, tempfile
argv = sys.argv[1:]
spec = json.loads(argv[argv.index("--executor_input") + 1])
uri = spec["inputs"]["artifacts"]["kale_environment"]["artifacts"][0]["uri"]
for prefix, mount in (("gs://", "/gcs/"), ("minio://", "/minio/"), ("s3://", "/s3/")):
    if uri.startswith(prefix):
        uri = mount + uri[len(prefix):]
env = tempfile.mkdtemp(prefix="kale-environment-")
with tarfile.open(uri) as tar:
    tar.extractall(env)
os.environ["KALE_ENVIRONMENT"] = env
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [env, os.environ.get("PYTHONPATH")]))
os.execvp(argv[0], argv)
'''


def kernel_python() -> str:
    return "%d.%d" % sys.version_info[:2]


def pack_bundle(files: dict[str, bytes]) -> bytes:
    """``files`` (path -> content) as one xz-compressed tar with fixed metadata: equal files, equal bytes."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(content), 0o644
            tar.addfile(info, io.BytesIO(content))
    return lzma.compress(buffer.getvalue(), preset=6)


def environment_source(function: str, image: str, requirements: list[str], runtime: str, wheel: str,
                       bundle: bytes, pip_options: list[str]) -> str:
    """The environment task's component function, with what it installs and carries written into it.

    ``runtime``: the ``kale-magic==<version>`` line to install from ``wheel`` (empty: the image has it);
    ``bundle``: the runtime bundle the task takes as its ``kale_runtime`` input (empty: it has none).
    """
    return ENVIRONMENT_SOURCE.format(
        function=function, python=kernel_python(), image=image, requirements=list(requirements),
        runtime=runtime, wheel=wheel, pip_options=list(pip_options), notebooks=NOTEBOOKS,
        runtime_input=f"{RUNTIME}: Input[Artifact], " if bundle else "", runtime_name=RUNTIME,
        digest=hashlib.sha256(bundle).hexdigest() if bundle else "")


def pip_index_options(index_urls) -> list[str]:
    """pip's options for ``Kale.pip_index_urls``: the first is the index, the others extra indexes;
    plain-http indexes are trusted hosts (as kfp does for its own install)."""
    from urllib.parse import urlsplit

    options = []
    for i, url in enumerate(index_urls):
        options += ["--index-url" if i == 0 else "--extra-index-url", url]
        if url.startswith("http://"):
            options += ["--trusted-host", urlsplit(url).hostname]
    return options
