"""What reaches a Kubeflow step besides its container spec, and the guard that keeps that spec small.

The KFP backend hands every executor's whole container spec to the driver pod as ONE command-line
argument: ``argocompiler/container.go`` adds ``"--container", inputValue(paramContainer)`` to the
``system-container-driver`` template, the spec being the executor's ``PipelineContainerSpec`` serialized
by ``stablyMarshalJSON`` (``argocompiler/proto.go``: protojson, then Go's ``encoding/json``, which
escapes ``<``, ``>`` and ``&`` as ``\\u003c``...), and ``cmd/driver/main.go`` reads it back with
``flag.String("container", ...)``. Linux caps one argument at 128 KiB (``MAX_ARG_STRLEN``); above that
Argo's pod fails with "argument list too long" before any code of ours runs. The workflow object
that carries every spec is itself capped (etcd, ~1.5 MB).

So kale-magic's runtime (its wheel) and the notebooks of steps too large for their component's source
travel as one compressed *runtime bundle*, an artifact uploaded with the pipeline under its pipeline
root (``<root>/kale-runtime/<digest>.tar.xz``, content-addressed so a rerun uploads nothing) and brought
in by a ``dsl.importer`` task, exactly as the workspace snapshot is: the launcher downloads it with the
namespace's own object-store credentials (``launcher_v2.go``'s ``downloadArtifacts``), so no pod needs
a package index for kale-magic, and nothing of ours sits in a container spec. An image built by
``kale-magic image`` (``Kfp.install_packages = False``) needs no bundle at all.

:func:`check_container_specs` is the compile-time guard: every executor's container spec, serialized
as the backend does, must stay under :data:`SPEC_LIMIT`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ...errors import EngineError, ValidationError

RUNTIME_DIR = "kale-runtime"  # under the pipeline root, beside kale-snapshots/
SPEC_LIMIT = 120 * 1024  # bytes of one container spec; the kernel refuses an argument over 128 KiB
# KFP's own default root (backend/src/v2/config/env.go, defaultPipelineRoot) and the per-namespace root
# a multi-user install's profile controller allows (manifests: profile-controller sync.py grants
# private-artifacts/<namespace>/* only)
SINGLE_USER_ROOT = "minio://mlpipeline/v2/artifacts"
MULTI_USER_ROOT = "minio://mlpipeline/private-artifacts/{namespace}/v2/artifacts"


SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")  # a pod's token, CA and namespace
LAUNCHER_CONFIGMAP = "kfp-launcher"  # per namespace; its defaultPipelineRoot overrides KFP's default


def default_root(namespace: str | None, multi_user: bool | None = None) -> str:
    """The pipeline root KFP itself uses when the pipeline names none: the namespace's ``kfp-launcher``
    ConfigMap's ``defaultPipelineRoot`` when this notebook may read it (the launcher reads the same,
    ``v2/config/env.go``), else by the install's mode: per namespace on a multi-user install (its profile
    controller's ``sync.py`` writes that root into each profile's ``kfp-launcher`` and its object-store
    policy denies the shared ``v2/artifacts`` prefix), else KFP's shared one. ``multi_user`` is what the
    API's healthz said (``apiserver/server/healthz_server.go``: ``multi_user``); None when no server was
    asked (``--compile-only``): a namespace then stands for a multi-user install."""
    configured = launcher_root(namespace)
    if configured:
        return configured
    if multi_user is None:
        multi_user = bool(namespace)
    if not multi_user:
        return SINGLE_USER_ROOT
    namespace = namespace or _read(SERVICE_ACCOUNT / "namespace")
    if not namespace:
        raise EngineError("this Kubeflow Pipelines is a multi-user install, whose default pipeline root is per "
                          "namespace, and no namespace is known: set %config Kfp.namespace = '<your profile's "
                          "namespace>' (or Kfp.pipeline_root)")
    return MULTI_USER_ROOT.format(namespace=namespace)


def launcher_root(namespace: str | None) -> str | None:
    """``defaultPipelineRoot`` of the namespace's ``kfp-launcher`` ConfigMap, read with the pod's service
    account (what the launcher itself reads, ``v2/config/env.go``); None outside a pod, when the ConfigMap
    is absent or unreadable, or has no root: then KFP's defaults apply."""
    import os
    import ssl
    import urllib.request

    token_file = SERVICE_ACCOUNT / "token"
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    if not host or not token_file.is_file():
        return None
    namespace = namespace or _read(SERVICE_ACCOUNT / "namespace")
    if not namespace:
        return None
    context = ssl.create_default_context(cafile=str(SERVICE_ACCOUNT / "ca.crt"))
    request = urllib.request.Request(
        f"https://{host}:{port}/api/v1/namespaces/{namespace}/configmaps/{LAUNCHER_CONFIGMAP}",
        headers={"Authorization": f"Bearer {_read(token_file)}"})
    try:
        with urllib.request.urlopen(request, timeout=3, context=context) as response:
            data = json.load(response).get("data") or {}
    except (OSError, ValueError):  # 403 without RBAC to read it, 404 without one: KFP's default then
        return None
    return (data.get("defaultPipelineRoot") or "").strip() or None


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


@dataclass(frozen=True)
class Bundle:
    """One runtime bundle: its bytes and where the pipeline imports it from."""

    url: str
    content: bytes


def bundle_url(pipeline_root: str, content: bytes) -> str:
    from ...snapshot.remote import is_store

    name = f"{RUNTIME_DIR}/{hashlib.sha256(content).hexdigest()[:32]}.tar.xz"
    if is_store(pipeline_root):
        return f"{pipeline_root.rstrip('/')}/{name}"
    return str(Path(pipeline_root).expanduser().absolute() / name)


def publish_bundle(bundle: Bundle) -> str:
    """Put the bundle at its URL unless it is there already (a folder root for ``kfp.local``, else the
    object store, with the credentials :mod:`kale_magic.snapshot.remote` reads)."""
    import tempfile

    from ...files import replacing
    from ...snapshot.remote import is_store, upload_if_absent

    if is_store(bundle.url):
        with tempfile.TemporaryDirectory(prefix="kale-runtime-") as tmp:
            path = Path(tmp) / bundle.url.rsplit("/", 1)[-1]
            path.write_bytes(bundle.content)
            return upload_if_absent(path, bundle.url, "kale-magic's runtime")
    target = Path(bundle.url)
    if not (target.is_file() and target.stat().st_size == len(bundle.content)):
        target.parent.mkdir(parents=True, exist_ok=True)
        with replacing(target) as tmp:
            tmp.write_bytes(bundle.content)
            tmp.chmod(0o644)  # the steps' containers read it as another user
        os.chmod(target.parent, 0o755)  # made by this user, entered by the containers' one
    return bundle.url


# the guard -----------------------------------------------------------------
def go_json(value) -> bytes:
    """``value`` as Go's ``encoding/json`` writes it after protojson (``stablyMarshalJSON``): sorted keys,
    no spaces, UTF-8, and ``<``, ``>``, ``&``, U+2028, U+2029 escaped as ``\\uXXXX``."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                          ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escaped)
    return text.encode()


def container_specs(pipeline_spec: dict) -> dict[str, bytes]:
    """Executor label -> its container spec as the driver receives it in ``--container``."""
    executors = pipeline_spec.get("deploymentSpec", {}).get("executors", {})
    return {label: go_json(e["container"]) for label, e in sorted(executors.items()) if "container" in e}


def check_container_specs(pipeline_spec: dict, step_of_executor: dict[str, str]) -> None:
    """Refuse a pipeline whose executor container spec would not fit the driver's command line."""
    for label, spec in container_specs(pipeline_spec).items():
        if len(spec) > SPEC_LIMIT:
            step = step_of_executor.get(label, label)
            raise ValidationError(
                f"The container spec of step '{step}' is {len(spec) / 1024:.0f} KiB as KFP's driver receives it, "
                f"over the {SPEC_LIMIT // 1024} KiB one command-line argument can hold: keep data out of its "
                "cells and %%functions (read it from a workspace file) and set Kfp.pipeline_root so large step "
                "code travels in the runtime bundle, or shorten Kfp.packages and Kfp.pip_index_urls.")
