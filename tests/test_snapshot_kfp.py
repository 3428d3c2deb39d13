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


def test_without_a_pipeline_root_the_yaml_has_no_snapshot_input(kernel, tmp_path):
    (tmp_path / "data.txt").write_text("x")
    kernel.cells(*CELLS)
    run = kernel.run("%kale_run --engine kfp --compile-only")
    assert run.state.tasks["Snapshot"].status == "done"
    assert "kale_snapshot" not in run.pipeline_file.read_text()


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
