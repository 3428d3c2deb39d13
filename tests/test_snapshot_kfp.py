"""Snapshots on Kubeflow Pipelines: published to a real SeaweedFS, imported by every compiled step."""

import os
import sys
from pathlib import Path

import pytest
import s3_server as s3

from kale_magic import marshal
from kale_magic.engines.kfp.compiler import CompileOptions, compile_pipeline
from kale_magic.snapshot import list_snapshots, publish, published_url, take_snapshot

ROOT = Path(__file__).parents[1]
s3_server, s3_env = s3.s3_server, s3.s3_env  # the fixtures
CELLS = ["%%step load\ntext = open('data.txt').read()", "%%step use\nn = len(text)"]


@pytest.fixture
def kfp_subprocess_root(tmp_path, monkeypatch):
    """Steps as subprocesses of this interpreter (they fetch the snapshot from S3 themselves, as nothing
    downloads it under kfp.local); the real containers are in test_kfp_containers."""
    from kfp import local

    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    root = tmp_path / "kfp-root"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    return root


def test_compiled_steps_work_in_the_snapshot_not_the_live_folder(kernel, s3_env, kfp_subprocess_root, tmp_path):
    (tmp_path / "data.txt").write_text("from the snapshot")  # the kernel's folder
    kernel.cells(*CELLS)
    store = tmp_path / ".kale/snapshots"
    snapshot = take_snapshot(tmp_path, store)
    root = f"s3://{s3_env.bucket}/pipelines"
    url = published_url(root, snapshot.id)
    path = compile_pipeline(kernel.magics.plan(), tmp_path / "p.yaml",
                            CompileOptions(snapshot_url=url, install_packages=False))
    text = path.read_text()
    assert url in text and text.count("comp-importer:") == 1  # one importer ...
    assert text.count("producerTask: importer") == 2  # ... whose output both steps take
    assert publish(store, snapshot.id, root) == url
    (tmp_path / "data.txt").write_text("edited after the snapshot")

    from kfp import components

    components.load_component_from_file(str(path))()
    (saved,) = kfp_subprocess_root.glob("*/load/text")
    assert marshal.load(saved) == "from the snapshot"


def test_compile_only_without_a_pipeline_root_names_the_workspace_files_the_steps_would_miss(kernel, tmp_path):
    """Nothing is published with --compile-only and no Kale.pipeline_root: the YAML imports the snapshot
    from KFP's default root, and the Compile task says which files would be missing and how to publish."""
    (tmp_path / "data.txt").write_text("x")
    kernel.cells(*CELLS)
    run = kernel.run("%kale_run --engine kfp --compile-only")
    assert run.status == "compiled"
    assert "minio://mlpipeline/v2/artifacts/kale-snapshots/" in run.pipeline_file.read_text()
    message = run.state.tasks["Compile"].message
    assert message.startswith("not published: the workspace files (data.txt) and kale-magic's runtime would be "
                              "read from minio://mlpipeline/v2/artifacts")
    assert "set Kale.pipeline_root" in message


def test_an_upload_with_no_pipeline_root_publishes_to_the_namespaces_default_root(kernel, s3_env, kfp_server,
                                                                                  tmp_path):
    """A multi-user namespace may only write private-artifacts/<namespace>/ (the profile controller's
    policy): with Kale.namespace and no root, the snapshot and the runtime go there, and the steps find them."""
    (tmp_path / "data.txt").write_text("x")
    client = s3_env.client()
    if "mlpipeline" not in [b["Name"] for b in client.list_buckets()["Buckets"]]:
        client.create_bucket(Bucket="mlpipeline")
    kernel.cells(*CELLS)
    kernel.run("%config Kale.namespace = 'team-a'")
    run = kernel.run(f"%kale_run --host {kfp_server.url} --upload-only")
    assert run.status == "uploaded", run.state.error
    prefix = "private-artifacts/team-a/v2/artifacts/"
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="mlpipeline", Prefix=prefix)["Contents"]]
    assert {k[len(prefix):].split("/")[0] for k in keys} >= {"kale-snapshots", "kale-runtime"}
    text = run.pipeline_file.read_text()
    assert all(f"minio://mlpipeline/{k}" in text for k in keys if "kale-runtime" in k or "kale-snapshots" in k)


def test_kale_run_publishes_the_snapshot_it_compiles_in(kernel, s3_env, kfp_server, tmp_path):
    (tmp_path / "data.txt").write_text("x")
    kernel.cells(*CELLS)
    kernel.run(f"%config Kale.pipeline_root = 's3://{s3_env.bucket}/root'")
    run = kernel.run(f"%kale_run --host {kfp_server.url} --upload-only")
    assert run.status == "uploaded", run.state.error
    (snapshot,) = list_snapshots(tmp_path / ".kale/snapshots")
    key = f"root/kale-snapshots/{snapshot.id}.tar.zst"
    assert f"s3://{s3_env.bucket}/{key}" in run.pipeline_file.read_text()
    head = s3_env.client().head_object(Bucket=s3_env.bucket, Key=key)
    assert head["ContentLength"] == (tmp_path / ".kale/snapshots/packs" / f"{snapshot.id}.tar.zst").stat().st_size


def test_an_unreachable_object_store_fails_the_upload_task_clearly(kernel, kfp_server, tmp_path, monkeypatch):
    (port,) = s3.free_ports(1)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "a")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "b")
    (tmp_path / "data.txt").write_text("x")
    kernel.cells(*CELLS)
    kernel.run("%config Kale.pipeline_root = 's3://bucket/root'")
    error = kernel.error(f"%kale_run --host {kfp_server.url} --upload-only")
    assert "cannot reach the object store" in str(error)
    assert kernel.magics  # the kernel is still usable


def test_the_namespaces_kfp_launcher_configmap_names_the_default_root(tmp_path, monkeypatch):
    """In a notebook pod the service account may read the namespace's kfp-launcher ConfigMap: its
    defaultPipelineRoot wins over KFP's defaults (a real HTTPS server with the pod's CA and token)."""
    import http.server
    import json as _json
    import ssl
    import subprocess
    import threading

    from kale_magic.engines.kfp import delivery

    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text("pod-token")
    (account / "namespace").write_text("team-b")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(tmp_path / "key.pem"),
                    "-out", str(account / "ca.crt")], check=True, capture_output=True)
    seen = []

    class Api(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append((self.path, self.headers["Authorization"]))
            found = self.path == "/api/v1/namespaces/team-b/configmaps/kfp-launcher"
            body = _json.dumps({"data": {"defaultPipelineRoot": "s3://team-b-bucket/pipelines"}} if found else {})
            self.send_response(200 if found else 404)
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Api)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(account / "ca.crt"), str(tmp_path / "key.pem"))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(delivery, "SERVICE_ACCOUNT", account)
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(server.server_address[1]))
        assert delivery.default_root(None) == "s3://team-b-bucket/pipelines"
        assert seen == [("/api/v1/namespaces/team-b/configmaps/kfp-launcher", "Bearer pod-token")]
        assert delivery.default_root("team-c") == "minio://mlpipeline/private-artifacts/team-c/v2/artifacts"  # 404
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
        assert delivery.default_root(None) == "minio://mlpipeline/v2/artifacts"  # not in a pod
    finally:
        server.shutdown()
