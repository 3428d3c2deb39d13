"""A KFP run's Argo workflow: which node is a step's executor, whether the cache skipped it, its pod's name.

The v2beta1 API cannot say. Its task details are the workflow's nodes (``apiserver/server/api_converter.go``
toModelTasks / toApiPipelineTaskDetail) with a random ``task_id``, the node's display name and state; a
node's own ID is not in them, and ``child_tasks[].pod_name`` holds the children's Argo *node IDs*, not pod
names. Every executor is displayed as ``executor``, so a detail cannot be tied to its step. The v1beta1 run
(``GET /apis/v1beta1/runs/{id}``, served by KFP 2.x) carries the workflow itself as ``workflow_manifest``:
its nodes have names, templates, types, phases and children, which is what KFP's own UI reads.

The argocompiler (``backend/src/v2/compiler/argocompiler/container.go``) makes each step task a DAG node
(template ``system-container-executor``) whose one child is the ``executor`` pod (``system-container-impl``,
``retry-`` prefixed when the task has a retry policy, ``metadata-N-M-`` prefixed with pod metadata). Its only
``when`` is the driver's cached-decision, so a Skipped executor is a cache hit. With a retry policy the
executor is a Retry node whose children are the attempts, pods displayed ``executor(N)``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

EXECUTOR_TEMPLATE = "system-container-executor"
FAILED_PHASES = ("Failed", "Error")


@dataclass(frozen=True)
class Workflow:
    manifest: dict

    @classmethod
    def parse(cls, text: str | None) -> Workflow | None:
        """The workflow of a ``workflow_manifest``; None when there is none yet (or it is not JSON)."""
        try:
            manifest = json.loads(text or "null")
        except ValueError:
            return None
        return cls(manifest) if isinstance(manifest, dict) and manifest.get("metadata") else None

    @property
    def nodes(self) -> dict[str, dict]:
        return (self.manifest.get("status") or {}).get("nodes") or {}

    def executors(self, task: str) -> list[dict]:
        """The executor node of each DAG node of ``task`` (one, or one per foreach iteration)."""
        nodes = self.nodes
        found = []
        for node in nodes.values():
            if node.get("displayName") == task and (node.get("templateName") or "").endswith(EXECUTOR_TEMPLATE):
                found += [nodes[c] for c in node.get("children") or []
                          if c in nodes and nodes[c].get("displayName") == "executor"]
        return found

    def failed_tasks(self) -> list[str]:
        """The tasks whose executor DAG failed, by name."""
        return sorted({node.get("displayName", "") for node in self.nodes.values()
                       if (node.get("templateName") or "").endswith(EXECUTOR_TEMPLATE)
                       and node.get("phase") in FAILED_PHASES})

    def cached(self, task: str) -> bool:
        """True only when every executor of ``task`` was skipped by the cache (never ran, has no pod)."""
        executors = self.executors(task)
        return bool(executors) and all(e.get("phase") == "Skipped" for e in executors)

    def last_attempt(self, executor: dict) -> dict:
        """A retried executor's last attempt (its ``executor(N)`` child with the highest N); else itself."""
        if executor.get("type") != "Retry":
            return executor
        attempts = [self.nodes[c] for c in executor.get("children") or [] if c in self.nodes]
        return max(attempts, key=_attempt_number, default=executor)

    def attempts(self, task: str) -> int:
        """How many times the (last) executor of ``task`` was started: a Retry node's attempts, else 1."""
        executors = self.executors(task)
        if not executors:
            return 0
        last = executors[-1]
        return len(last.get("children") or []) if last.get("type") == "Retry" else 1

    def failed_pod(self, task: str) -> tuple[str | None, str]:
        """The pod of the failed (last) attempt of ``task``'s executor, and Argo's message for it."""
        for executor in self.executors(task):
            attempt = self.last_attempt(executor)
            if attempt.get("phase") in FAILED_PHASES:
                pod = self.pod_name(attempt) if attempt.get("type") == "Pod" else None
                return pod, (attempt.get("message") or "").strip()
        return None, ""

    def failed_driver(self, task: str) -> tuple[str | None, str]:
        """The pod of ``task``'s failed driver (``<task>-driver``: then no executor ran), and Argo's message."""
        for node in self.nodes.values():
            if node.get("displayName") == f"{task}-driver" and node.get("phase") in FAILED_PHASES:
                return self.pod_name(node), (node.get("message") or "").strip()
        return None, ""

    def pod_name(self, node: dict) -> str:
        """``RetrievePodName`` in ``backend/src/common/util/workflow.go`` (mirrored by the frontend's
        ``getNodeNameFromNodeId`` in ``src/lib/Utils.tsx``): ``<workflow>-<template>-<hash of the node ID>``
        since Argo 3.5's pod names v2; the node ID itself under pod names v1."""
        metadata = self.manifest.get("metadata") or {}
        if self.manifest.get("apiVersion") == "v1" or \
                (metadata.get("annotations") or {}).get("workflows.argoproj.io/pod-name-format") == "v1":
            return node["id"]
        name = metadata.get("name", "")
        if node.get("name") == name:
            return name
        prefix = name if ".inline" in node.get("name", "") else f"{name}-{node.get('templateName', '')}"
        return f"{prefix}-{node['id'].split('-')[-1]}"


def _attempt_number(node: dict) -> int:
    match = re.search(r"\((\d+)\)$", node.get("displayName") or node.get("name") or "")
    return int(match.group(1)) if match else -1
