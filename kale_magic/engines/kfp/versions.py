"""Which Kubeflow Pipelines servers can run a compiled pipeline, checked before anything is uploaded.

The kfp SDK writes fields that older API servers cannot parse or silently ignore. The server says its
version in ``healthz`` (``tag_name``); a pipeline that needs more is refused in one sentence naming the
steps and the fix, rather than uploaded to fail (or to run without its retries) on the cluster.
Supported: KFP 2.0 and newer; what needs a later server is listed in ``NEEDS``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ...errors import EngineError
from ...plan import Plan

MINIMUM = (2, 0)  # the v2beta1 API


@dataclass(frozen=True)
class Need:
    version: tuple[int, int]
    what: str  # the options, as the user wrote them
    fix: str


NEEDS = {
    "resources": Need((2, 4), "--cpu/--memory/--gpu", "remove them"),  # resourceCpuLimit & co. fail to parse
    "retries": Need((2, 5), "--retries", "remove it"),  # ignored before 2.5
    "volumes": Need((2, 5), "Kfp.volumes", "remove them"),  # kfp-kubernetes' PVC parameters fail to parse
    "secrets": Need((2, 5), "Kfp.secrets and %%step --secret", "remove them"),
    # dsl.Collected of parameters and artifacts in the driver and launcher (kubeflow/pipelines#11725); the
    # ParallelFor parallelism limit (#10798, 2.4) and upstream inputs inside a loop (#11627, 2.5) come before
    "foreach": Need((2, 14), "--foreach", "run the notebook with --engine local"),
}
SECURITY_CONTEXT = (2, 16)  # Kfp.run_as_user: earlier servers ignore the pods' security context


def parse_version(tag: str | None) -> tuple[int, int] | None:
    """``2.5.0`` -> (2, 5); None for what is not a release (``unknown``, ``master``, a commit)."""
    match = re.match(r"v?(\d+)\.(\d+)", tag or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


def healthz(client) -> dict:
    """The server's healthz answer: ``tag_name`` and ``multi_user`` (kfp_server_api's model drops the tag,
    so read the JSON)."""
    import json

    response = client._healthz_api.api_client.call_api("/apis/v2beta1/healthz", "GET", auth_settings=["Bearer"],
                                                       _preload_content=False, _request_timeout=10)
    return json.loads(response.data or b"{}")


def check(tag: str | None, host: str, plan: Plan, options) -> str:
    """Refuse what the server at ``host`` cannot run; return a note about what it will ignore (or "")."""
    version = parse_version(tag)
    if version is None:
        return ""
    if version < MINIMUM:
        raise EngineError(f"Kubeflow Pipelines {tag} at {host} is older than 2.0, whose API kale-magic needs: "
                          "upgrade KFP.")
    for key, steps in sorted(_uses(plan, options).items(), key=lambda kv: NEEDS[kv[0]].version):
        need = NEEDS[key]
        if version < need.version:
            where = f" (steps {', '.join(steps)})" if steps else ""
            raise EngineError(f"Kubeflow Pipelines {tag} at {host} cannot run this pipeline: {need.what}{where} "
                              f"need KFP {'.'.join(map(str, need.version))} or newer; upgrade KFP or {need.fix}.")
    if options.run_as_user is not None and version < SECURITY_CONTEXT:
        return (f"KFP {tag} ignores the pods' security context (it needs 2.16): the steps run as their image's "
                "user")
    return ""


def _uses(plan: Plan, options) -> dict[str, list[str]]:
    uses: dict[str, list[str]] = {}
    for name, step in plan.steps.items():
        o = step.options
        if o.cpu or o.memory or o.gpu:
            uses.setdefault("resources", []).append(name)
        if o.retries:
            uses.setdefault("retries", []).append(name)
        if o.secrets:
            uses.setdefault("secrets", []).append(name)
        if step.foreach:
            uses.setdefault("foreach", []).append(name)
    if options.install_packages:  # the environment task's cpu/memory requests
        uses.setdefault("resources", []).append("kale-environment")
    if options.volumes:
        uses["volumes"] = []
    if options.secrets:
        uses.setdefault("secrets", [])
    return uses
