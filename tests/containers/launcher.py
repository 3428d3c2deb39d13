"""KFP's launcher around each ``kfp.local`` Docker task: the step sees what a cluster's pod sees.

kfp.local mounts its pipeline root into every container and hands the steps local paths; a cluster hands
them object-store URIs and nothing else. This rig puts the launcher's contract back
(``backend/src/v2/component/launcher_v2.go`` and ``driver/driver.go`` of kubeflow/pipelines):

- the executor input the command gets names store URIs: each output under
  ``<root>/<pipeline>/<run id>/<task>/<salt>/<output>`` (the driver's ``GenerateOutputURI``), inputs as their
  producer (or an importer) wrote them, the output metadata file at the task root's local path and output
  parameters under ``/tmp/kfp/outputs/`` (the driver's executor outputs);
- before the command, every input artifact is downloaded from the store to ``LocalPathForURI``'s path
  (``gs://`` ``minio://`` ``s3://`` under ``/gcs`` ``/minio`` ``/s3``, emptyDir volumes on a cluster
  (argocompiler ``container.go``), fresh host folders here), with the namespace's credentials;
- after it exits 0, every output artifact is uploaded from its local path to its URI (a missing one is
  allowed, as the launcher allows it), then the metadata file and parameters go back to kfp.local;
- the emptyDir volumes the executor's Kubernetes config asks for are mounted (tests/containers/platform.py);
- kfp.local's root is not mounted and the container gets no store credentials: a step that read or wrote
  anything but those local paths fails here as on a cluster.

The store's policy is the profile controller's (tests/s3_server.py's namespace identity): an upload outside
the namespace's prefixes is refused by SeaweedFS itself, and fails the task as the launcher fails it.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import time
import uuid
from pathlib import Path

from .platform import docker_args, empty_dirs

MOUNTS = (("gs://", "/gcs/"), ("minio://", "/minio/"), ("s3://", "/s3/"))  # launcher_v2.go LocalPathForURI
PARAMETERS = "/tmp/kfp/outputs"  # driver.go: an output parameter's file


def local_path_for_uri(uri: str) -> str:
    """Where the launcher puts (and takes) the artifact at ``uri`` in the step's container."""
    for prefix, mount in MOUNTS:
        if uri.startswith(prefix):
            return mount + uri[len(prefix):]
    raise ValueError(f"failed to generate local path for URI {uri}: unsupported storage scheme")


def du(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def bucket_and_key(uri: str) -> tuple[str, str]:
    for prefix in ("minio://", "s3://"):
        if uri.startswith(prefix):
            bucket, _, key = uri[len(prefix):].partition("/")
            return bucket, key
    raise ValueError(f"{uri} is not in the S3 store this rig serves")


class Launcher:
    """The launcher of every Docker task kfp.local runs while installed (``install``).

    ``client``: boto3 client with the namespace's credentials; ``root``: the pipeline root the driver
    resolves (``minio://mlpipeline/private-artifacts/<namespace>/v2/artifacts``); ``run_path``: the
    ``<pipeline>/<run id>`` of the KFP run being imitated (kfp.local's run folder name when None);
    ``scratch``: host folder for the tasks' emptyDir volumes.
    """

    def __init__(self, client, root: str, scratch: Path, uid: int | None = None):
        self.client, self.root, self.scratch, self.uid = client, root.rstrip("/"), scratch, uid
        self.run_path: str | None = None
        self.downloaded: list[str] = []
        self.uploaded: list[str] = []
        self.commands: list[list[str]] = []  # each task's argv, as its container was started
        self.environments: list[dict[str, str]] = []  # and its environment variables
        self.tmpfs: dict[str, dict[str, str]] = {}  # task name -> its memory-backed emptyDirs (path -> options)
        self.empty_dirs: dict[str, list[dict]] = {}  # of the pipeline being run (platform.empty_dirs)
        self._tasks = itertools.count()

    def install(self, monkeypatch) -> None:
        """Every DockerRunner task of kfp.local goes through ``launch`` (kfp.local looks the handler up
        by module attribute at each task)."""
        from kfp.local import docker_task_handler

        launcher = self

        class LauncherTaskHandler(docker_task_handler.DockerTaskHandler):
            def run(self):
                return launcher.launch(self)

        monkeypatch.setattr(docker_task_handler, "DockerTaskHandler", LauncherTaskHandler)

    def launch(self, task):
        from kfp.local import docker_task_handler, status

        argv = list(task.full_command)
        at = argv.index("--executor_input") + 1
        stray = [arg for i, arg in enumerate(argv) if i != at and task.pipeline_root in arg]
        assert not stray, f"a placeholder other than the executor input names kfp.local's root: {stray}"
        spec = json.loads(argv[at])
        local_metadata = spec["outputs"]["outputFile"]
        # a loop's iteration runs under kfp.local's <run>/for-loop-N-iteration-I/<task>; the driver names the
        # task only, its items apart by their salts (provisionOutputs in backend/src/v2/driver/driver.go)
        run, *_, name = Path(local_metadata).parent.relative_to(task.pipeline_root).parts
        task_root = f"{self.root}/{self.run_path or run}/{name}/{uuid.uuid4().hex[:10]}"
        local_parameters = self._to_cluster(spec, task_root)
        argv[at] = json.dumps(spec)

        scratch = self.scratch / f"{next(self._tasks):03d}-{name}"
        volumes = {}
        for mount in ("/gcs", "/s3", "/minio", PARAMETERS):
            folder = scratch / mount.strip("/").replace("/", "-")
            folder.mkdir(parents=True)
            folder.chmod(0o777)  # an emptyDir
            volumes[str(folder)] = {"bind": mount, "mode": "rw"}
        platform = docker_args(self.empty_dirs.get(name, []), scratch)  # the driver's pod spec (k8s.go)
        volumes.update(platform["volumes"])
        self.tmpfs[name] = platform["tmpfs"]
        try:
            started = time.monotonic()
            self._download(spec, scratch)
            print(f"launcher: {name}'s inputs downloaded ({du(scratch) / 1e6:.1f} MB) in "
                  f"{time.monotonic() - started:.1f} s")
            self.commands.append(argv)
            self.environments.append(dict(task.env_vars))
            import docker

            client = docker.from_env()
            try:
                code = docker_task_handler.run_docker_container(
                    client=client, image=task.image, command=argv, volumes=volumes,
                    **{**task.runner.container_run_args, "environment": task.env_vars, "tmpfs": platform["tmpfs"]})
            finally:
                client.close()
            if code != 0:
                return status.Status.FAILURE
            started = time.monotonic()
            self._upload(spec, scratch)
            print(f"launcher: {name}'s outputs uploaded in {time.monotonic() - started:.1f} s")
            self._give_back(spec, scratch, local_metadata, local_parameters)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return status.Status.SUCCESS

    def _to_cluster(self, spec: dict, task_root: str) -> dict[str, str]:
        """Rewrite kfp.local's executor input into the driver's; returns kfp.local's parameter files."""
        for name, listed in spec["inputs"].get("artifacts", {}).items():
            for artifact in listed["artifacts"]:
                assert artifact["uri"].startswith(("minio://", "s3://")), (
                    f"input {name!r} is at {artifact['uri']}, not in the store: the launcher could not fetch it")
        for name, listed in spec["outputs"].get("artifacts", {}).items():
            for artifact in listed["artifacts"]:
                artifact["uri"] = f"{task_root}/{name}"
        local_parameters = {}
        for name, parameter in spec["outputs"].get("parameters", {}).items():
            local_parameters[name] = parameter["outputFile"]
            parameter["outputFile"] = f"{PARAMETERS}/{name}"
        spec["outputs"]["outputFile"] = f"{local_path_for_uri(task_root)}/output_metadata.json"
        return local_parameters

    def _host(self, scratch: Path, container_path: str) -> Path:
        mount, _, rest = container_path.strip("/").partition("/")
        return scratch / mount / rest

    def _download(self, spec: dict, scratch: Path) -> None:
        """``downloadArtifacts``: an object, or every object under the URI's prefix (a folder)."""
        for name, listed in spec["inputs"].get("artifacts", {}).items():
            for artifact in listed["artifacts"]:
                uri = artifact["uri"]
                bucket, key = bucket_and_key(uri)
                target = self._host(scratch, local_path_for_uri(uri))
                keys = [item["Key"] for page in self.client.get_paginator("list_objects_v2").paginate(
                    Bucket=bucket, Prefix=key) for item in page.get("Contents", [])]
                keys = [k for k in keys if k == key or k.startswith(key.rstrip("/") + "/")]
                if not keys:
                    raise RuntimeError(f"failed to download input artifact {name!r} from remote storage URI "
                                       f"{uri!r}: nothing there")
                for found in keys:
                    path = target if found == key else target / found[len(key.rstrip("/")) + 1:]
                    path.parent.mkdir(parents=True, exist_ok=True)
                    self.client.download_file(bucket, found, str(path))
                self.downloaded.append(uri)
        self._own(scratch)

    def _own(self, scratch: Path) -> None:
        """What the launcher writes belongs to the pod's user."""
        if self.uid is None or os.geteuid() != 0:
            return
        for path in [scratch, *scratch.rglob("*")]:
            os.chown(path, self.uid, -1)

    def _upload(self, spec: dict, scratch: Path) -> None:
        """``uploadOutputArtifacts``: a file to its key, a folder's files under it; refused by the store's
        policy outside the namespace's prefixes (the task fails, as the launcher's does)."""
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import ClientError

        for name, listed in spec["outputs"].get("artifacts", {}).items():
            for artifact in listed["artifacts"]:
                uri = artifact["uri"]
                bucket, key = bucket_and_key(uri)
                source = self._host(scratch, local_path_for_uri(uri))
                files = [(source, key)] if source.is_file() else [
                    (path, f"{key}/{path.relative_to(source).as_posix()}")
                    for path in sorted(source.rglob("*")) if path.is_file()]
                try:
                    for path, object_key in files:
                        self.client.upload_file(str(path), bucket, object_key)
                except (ClientError, S3UploadFailedError) as error:
                    raise RuntimeError(f"failed to upload output artifact {name!r} to remote storage URI "
                                       f"{uri!r}: {error}") from None
                if files:
                    self.uploaded.append(uri)

    def _give_back(self, spec: dict, scratch: Path, local_metadata: str, local_parameters: dict) -> None:
        """kfp.local reads the executor output (whose artifacts name their store URIs, as the launcher
        records them) and output parameters from its own paths."""
        metadata = self._host(scratch, spec["outputs"]["outputFile"])
        if metadata.is_file():
            Path(local_metadata).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(metadata, local_metadata)
        for name, local in local_parameters.items():
            written = scratch / PARAMETERS.strip("/").replace("/", "-") / name
            if written.is_file():
                Path(local).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(written, local)

    def load(self, uri: str, folder: Path):
        """A value a step saved at ``uri`` (its output artifact's folder), read back from the store."""
        from kale_magic import marshal

        bucket, key = bucket_and_key(uri)
        target = folder / uuid.uuid4().hex
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key + "/"):
            for item in page.get("Contents", []):
                path = target / item["Key"][len(key) + 1:]
                path.parent.mkdir(parents=True, exist_ok=True)
                self.client.download_file(bucket, item["Key"], str(path))
        return marshal.load(target)

    def run(self, pipeline_file: Path, **arguments) -> None:
        """Run a compiled pipeline as a cluster would: each executor's container spec through the driver's
        real exec argv first, then every task under this launcher."""
        from kfp import components

        from containers import driver_argv

        driver_argv(pipeline_file)
        self.empty_dirs = empty_dirs(pipeline_file)
        components.load_component_from_file(str(pipeline_file))(**arguments)
