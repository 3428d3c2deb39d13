"""The Kubernetes platform config a compiled pipeline asks for, which ``kfp.local`` ignores, put back.

KFP's driver adds each executor's ``emptyDirMounts`` (kfp-kubernetes' ``empty_dir_mount``) to its pod
(``backend/src/v2/driver/k8s.go``: a volume with the mount's medium and ``sizeLimit``, mounted at its path).
A ``medium: Memory`` one is a tmpfs of at most that size, writable by the pod's user, whose pages count
against the pod's memory; writing past its size fails with ENOSPC. Here it is Docker's tmpfs of the same
size (``exec``: Docker's default ``noexec`` would refuse the extension modules a step loads from it, which
a cluster's emptyDir allows); an emptyDir on the node's disk is a fresh host folder.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path


def task_name(command: list[str], pipeline_root: str) -> str:
    """The pipeline task a kfp.local Docker task runs (its executor output's folder under kfp.local's root)."""
    spec = json.loads(command[command.index("--executor_input") + 1])
    return Path(spec["outputs"]["outputFile"]).parent.relative_to(pipeline_root).parts[-1]


def empty_dirs(pipeline_file) -> dict[str, list[dict]]:
    """Task name -> the emptyDir mounts its executor's Kubernetes config asks for."""
    import yaml

    spec, *rest = yaml.safe_load_all(Path(pipeline_file).read_text())
    executors = ((rest[0] if rest else {}).get("platforms", {}).get("kubernetes", {})
                 .get("deploymentSpec", {}).get("executors", {}))
    labels: dict[str, str] = {}
    for component in [spec["root"], *spec.get("components", {}).values()]:
        for name, task in component.get("dag", {}).get("tasks", {}).items():
            label = spec["components"][task["componentRef"]["name"]].get("executorLabel")
            if label:
                assert labels.setdefault(name, label) == label, f"two executors for task {name!r}"
    return {name: executors[label]["emptyDirMounts"] for name, label in labels.items()
            if executors.get(label, {}).get("emptyDirMounts")}


def docker_args(mounts: list[dict], scratch: Path | None = None) -> dict:
    """Docker's ``tmpfs`` and ``volumes`` arguments that give a container the ``mounts``."""
    from kale_magic.engines.kfp.footprint import quantity_bytes

    tmpfs, volumes = {}, {}
    for mount in mounts:
        if mount.get("medium") == "Memory":
            size = f"size={quantity_bytes(mount['sizeLimit'])}," if mount.get("sizeLimit") else ""
            tmpfs[mount["mountPath"]] = f"{size}exec,mode=1777"
        else:
            folder = Path(tempfile.mkdtemp(prefix="empty-dir-", dir=scratch))
            folder.chmod(0o777)
            volumes[str(folder)] = {"bind": mount["mountPath"], "mode": "rw"}
    return {"tmpfs": tmpfs, "volumes": volumes}


def install(monkeypatch, pipeline_file) -> None:
    """Every kfp.local Docker task of ``pipeline_file`` gets its emptyDir mounts while ``monkeypatch`` lasts
    (kfp.local looks its task handler up by module attribute at each task)."""
    import copy

    from kfp.local import docker_task_handler

    mounts = empty_dirs(pipeline_file)

    class PlatformTaskHandler(docker_task_handler.DockerTaskHandler):
        def run(self):
            extra = docker_args(mounts.get(task_name(self.full_command, self.pipeline_root), []))
            assert not extra["volumes"], "an emptyDir on disk needs the launcher rig (tests/containers/launcher.py)"
            self.runner = copy.copy(self.runner)
            self.runner.container_run_args = {**self.runner.container_run_args, "tmpfs": extra["tmpfs"]}
            return super().run()

    monkeypatch.setattr(docker_task_handler, "DockerTaskHandler", PlatformTaskHandler)
