"""Snapshots on Kubeflow Pipelines: published to a real SeaweedFS, imported by every compiled step."""

import os
import re
import sys
from pathlib import Path

import pytest
import s3_server as s3

from kale_magic import marshal
from kale_magic.engines.kfp.compiler import CompileOptions, compile_pipeline
from kale_magic.snapshot import list_snapshots, publish, published_url, take_snapshot

ROOT = Path(__file__).parents[1]
s3_server, s3_env, kfp_default_store = s3.s3_server, s3.s3_env, s3.kfp_default_store  # the fixtures
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
    assert "set Kfp.pipeline_root" in message


def test_no_snapshot_on_kfp_refuses_a_run_whose_workspace_has_files(kernel, kfp_server, tmp_path):
    """KFP pods start in an empty folder: --no-snapshot would run the steps without data.txt, so the run is
    refused before anything is uploaded, naming the file and the fix; the compiled YAML is kept."""
    (tmp_path / "data.txt").write_text("x")
    kernel.cells(*CELLS)
    error = kernel.error(f"%kale_run --host {kfp_server.url} --no-snapshot")
    assert str(error).startswith("--no-snapshot: the KFP steps work in an empty folder, so this pipeline cannot "
                                 "run without the workspace files (data.txt); drop --no-snapshot")
    assert "Kfp.pipeline_root" in str(error)
    assert kfp_server.pipelines == {}  # nothing uploaded


def test_no_snapshot_compile_only_on_kfp_warns_and_an_empty_workspace_needs_nothing(kernel, kfp_server, tmp_path):
    (tmp_path / "data.txt").write_text("x")
    kernel.cells(*CELLS)
    run = kernel.run("%kale_run --engine kfp --compile-only --no-snapshot")
    assert run.status == "compiled"
    assert run.state.tasks["Snapshot"].message.startswith(
        "--no-snapshot: the KFP steps work in an empty folder, so this pipeline runs without the workspace files "
        "(data.txt)")
    (tmp_path / "data.txt").unlink()
    run = kernel.run("%kale_run --engine kfp --compile-only --no-snapshot")
    assert run.state.tasks["Snapshot"].message == "--no-snapshot: steps run in the notebook's folder"


@pytest.mark.parametrize("multi_user, prefix", [(True, "private-artifacts/team-a/v2/artifacts/"),
                                                (False, "v2/artifacts/")])
def test_an_upload_with_no_pipeline_root_publishes_to_the_default_root_of_the_servers_mode(
        kernel, kfp_default_store, kfp_env, tmp_path, multi_user, prefix):
    """The mode comes from the server (healthz ``multi_user``), not from whether Kfp.namespace is set: a
    multi-user namespace may only write private-artifacts/<namespace>/ (the profile controller's policy),
    so the snapshot and the runtime go there; a single-user install ignores namespaces and keeps KFP's
    shared root. Either way the YAML's importers name the keys that were written."""
    from kfp_api_server import FakeKfpServer

    (tmp_path / "data.txt").write_text("x")
    kernel.cells(*CELLS)
    kernel.run("%config Kfp.namespace = 'team-a'")
    with FakeKfpServer(multi_user=multi_user) as server:
        run = kernel.run(f"%kale_run --host {server.url} --upload-only")
    assert run.status == "uploaded", run.state.error
    imported = re.findall(r"minio://mlpipeline/([^\s'\"]+)", run.pipeline_file.read_text())
    assert {k[len(prefix):].split("/")[0] for k in imported if k.startswith(prefix)} == {"kale-snapshots",
                                                                                       "kale-runtime"}
    assert all(k.startswith(prefix) for k in imported), imported
    client = kfp_default_store.client()
    assert all(client.head_object(Bucket="mlpipeline", Key=k)["ContentLength"] > 0 for k in set(imported))


def test_a_multi_user_server_with_no_namespace_known_is_refused_naming_the_setting(kernel, kfp_env, tmp_path):
    from kfp_api_server import FakeKfpServer

    (tmp_path / "data.txt").write_text("x")
    kernel.cells(*CELLS)
    with FakeKfpServer(multi_user=True) as server:
        error = kernel.error(f"%kale_run --host {server.url} --upload-only")
        assert not server.pipelines
    assert "multi-user install" in str(error) and "%config Kfp.namespace" in str(error)


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
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
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
