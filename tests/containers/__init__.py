"""Real containers for the Kubeflow tests: the local base image and a ``kfp.local.DockerRunner`` session.

The image ``python:3.11`` is built on this machine by ``build_base_image.sh`` (debootstrap, Python and pip
only, like the official image; never pulled). Containers share the host's network and get the host's pip
configuration (index URLs, find-links, certificate, constraints; local folders mounted read-only at the
same paths), so pip inside a step finds packages exactly where pip on this machine does, and a shared
download cache keeps repeated installs cheap. Nothing from the developer's Python environment leaks in:
no ``PYTHONPATH``, no mounted checkout.

Tests that need Docker fail when it is missing; ``KALE_SKIP_CONTAINERS=1`` skips them on purpose.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
BASE_IMAGE = "python:3.11"
POD_USER = 65534  # Kale.run_as_user's default: kfp.local ignores the pods' security context, the runner applies it
SKIP_VARIABLE = "KALE_SKIP_CONTAINERS"
# pip settings that say where packages come from and how they are trusted
PIP_SOURCES = ("index-url", "extra-index-url", "find-links", "trusted-host", "cert", "constraint",
               "default-timeout", "no-index")


def connect():
    """A client of the running Docker daemon, or RuntimeError saying how to start one."""
    try:
        import docker

        client = docker.from_env()
        client.ping()
    except Exception as error:  # no SDK, no daemon, no permission
        raise RuntimeError(f"Kubeflow steps run in real containers and need a Docker daemon ({error}); "
                           "start one with tests/containers/dockerd.sh") from None
    return client


def require_docker():
    """A client of the Docker daemon; the test fails without one (and skips only when asked to)."""
    if os.environ.get(SKIP_VARIABLE) == "1":
        pytest.skip(f"{SKIP_VARIABLE}=1: the tests in real containers are skipped on purpose")
    try:
        return connect()
    except RuntimeError as error:
        pytest.fail(f"{error}, or set {SKIP_VARIABLE}=1 to skip these tests on purpose", pytrace=False)


def ensure_image(client, image: str = BASE_IMAGE) -> str:
    """The local base image, built once (a few minutes) when the daemon does not have it yet."""
    import docker

    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        subprocess.run(["bash", str(HERE / "build_base_image.sh"), image], check=True)
    return image


def pip_settings(python: str = sys.executable) -> dict[str, str]:
    """This machine's pip configuration as ``PIP_*`` variables: files and environment, environment winning."""
    listed = subprocess.run([python, "-m", "pip", "config", "list"], capture_output=True, text=True,
                            check=True).stdout
    found: dict[str, tuple[bool, str]] = {}
    for line in listed.splitlines():
        scope_key, _, value = line.partition("=")
        scope, _, key = scope_key.rpartition(".")
        if key not in PIP_SOURCES:
            continue
        from_env = scope == ":env:"
        if key not in found or from_env or not found[key][0]:
            found[key] = (from_env, value.strip().strip("'\""))
    return {f"PIP_{key.upper().replace('-', '_')}": value for key, (_, value) in sorted(found.items())}


def local_paths(settings: dict[str, str]) -> list[str]:
    """Folders and files of this machine that the pip settings name, to mount at the same paths.

    A local index (``file:///.../simple``) links to its files relatively (``../../files/x.whl``), so its
    parent folder is mounted.
    """
    paths = set()
    for key, value in settings.items():
        for item in value.split():
            path = item[len("file://"):] if item.startswith("file://") else item
            if path.startswith("/") and os.path.exists(path):
                paths.add(str(Path(path).parent) if key.endswith("INDEX_URL") else path)
    return sorted(paths)


def runner(cache_dir: Path, environment: dict[str, str] | None = None, launcher_dir: Path | None = None,
           host_pip: bool = True, **run_args):
    """A ``DockerRunner`` on the host network with this machine's pip sources and a shared pip cache;
    ``launcher_dir`` is mounted at ``/s3``, where KFP's launcher puts the input artifacts it downloads
    (``launcher_v2.go``: ``LocalPathForURI`` maps ``s3://bucket/key`` to ``/s3/bucket/key``); with
    ``host_pip`` False nothing of this machine's pip configuration goes in: pip finds only the public index,
    as on a user's cluster."""
    from docker.types import Mount
    from kfp import local

    settings = pip_settings() if host_pip else {}
    mounts = [Mount(path, path, type="bind", read_only=True) for path in local_paths(settings)]
    cache_dir.mkdir(parents=True, exist_ok=True)
    mounts.append(Mount("/kale-pip-cache", str(cache_dir), type="bind"))
    if launcher_dir is not None:
        mounts.append(Mount("/s3", str(launcher_dir), type="bind", read_only=True))
    env = {**settings, "PIP_CACHE_DIR": "/kale-pip-cache", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
           "PIP_ROOT_USER_ACTION": "ignore", **(environment or {})}
    return local.DockerRunner(network_mode="host", environment=env, mounts=mounts, **run_args)


@pytest.fixture(scope="session")
def docker_client():
    client = require_docker()
    yield client
    client.close()


@pytest.fixture(scope="session")
def base_image(docker_client):
    return ensure_image(docker_client)


@pytest.fixture(scope="session")
def pip_cache(tmp_path_factory):
    """One pip download cache for every container of the test session (pods run as a non-root user)."""
    path = tmp_path_factory.mktemp("pip-cache")
    path.chmod(0o777)
    return path


@pytest.fixture(scope="session")
def shared_pipeline_root(tmp_path_factory):
    """One pipeline root for the session's container runs: with kfp.local's cache on, tasks that are the
    same in several tests (an environment task with the same pins) run once."""
    path = tmp_path_factory.mktemp("kfp-docker-root")
    path.chmod(0o777)
    return path


@pytest.fixture
def docker_pipeline_root(base_image, pip_cache, shared_pipeline_root):
    """``kfp.local`` with a ``DockerRunner`` whose containers run as a non-root user (as the compiled pods
    do on a cluster); returns the pipeline root, a host folder also usable as ``Kale.pipeline_root``."""
    from kfp import local

    launcher = shared_pipeline_root / ".launcher"
    launcher.mkdir(mode=0o755, exist_ok=True)
    local.init(runner=runner(pip_cache, launcher_dir=launcher, user=f"{POD_USER}:0"),
               pipeline_root=str(shared_pipeline_root), enable_caching=True,
               cache_root=str(shared_pipeline_root / ".kfp-cache"))
    return shared_pipeline_root


def launcher_download(spec_text: str, client, launcher_dir: Path) -> list[str]:
    """What KFP's launcher does before a step's command (``downloadArtifacts``): fetch each imported
    artifact of the pipeline from the object store to ``/s3/<bucket>/<key>`` (``launcher_dir`` here)."""
    import re

    fetched = []
    for bucket, key in sorted(set(re.findall(r"s3://([^/\s'\"]+)/([^\s'\"]+)", spec_text))):
        if not key.startswith(("kale-", "results/kale-")) and "/kale-" not in key:
            continue
        target = launcher_dir / bucket / key
        target.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(bucket, key, str(target))
        target.chmod(0o644)
        fetched.append(f"s3://{bucket}/{key}")
    for folder in launcher_dir.rglob("*"):
        if folder.is_dir():
            folder.chmod(0o755)
    return fetched


def driver_argv(pipeline_file) -> dict[str, int]:
    """Pass each executor's container spec to a real ``exec`` as the KFP driver pod gets it: one
    ``--container`` argument holding the spec as Go JSON (argocompiler/container.go, cmd/driver/main.go).
    The kernel refuses an argument over 128 KiB (E2BIG, Argo's "argument list too long"), so a spec that
    would fail on a cluster raises OSError here. Returns executor label -> bytes of its argument."""
    import yaml

    from kale_magic.engines.kfp.delivery import container_specs

    spec = next(yaml.safe_load_all(Path(pipeline_file).read_text()))
    sizes = {}
    for label, container in container_specs(spec).items():
        subprocess.run(["/bin/true", "--container", container.decode()], check=True)
        sizes[label] = len(container)
    return sizes
