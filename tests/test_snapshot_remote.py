"""Packs and the object store: round trips through a real SeaweedFS on 127.0.0.1, and its faults."""


import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import s3_server as s3


from kale_magic.snapshot import (SnapshotError, download, pack, publish, published_url, take_snapshot, unpack,
                                 upload)
from kale_magic.snapshot import remote
from kale_magic.engines.kfp.snapshot import enter_snapshot, fetch_snapshot, snapshot_importer

s3_server, s3_env = s3.s3_server, s3.s3_env  # the fixtures

FILES = {"train.py": "print('hi')\n", "data/a.csv": "x,y\n1,2\n", "data/b.bin": None, "empty/": None}


@pytest.fixture
def snapshot(tmp_path):
    root = tmp_path / "ws"
    (root / "data").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "train.py").write_text(FILES["train.py"])
    (root / "data/a.csv").write_text(FILES["data/a.csv"])
    (root / "data/b.bin").write_bytes(os.urandom(300_000))
    (root / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(root / "run.sh", 0o755)
    (root / "latest.csv").symlink_to("data/a.csv")
    store = root / ".kale/snapshots"
    return root, store, take_snapshot(root, store)


def tree(root: Path) -> dict[str, object]:
    """Everything a step could observe: contents, executable bits, links, folders."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith(".kale"):
            continue
        if path.is_symlink():
            out[rel] = ("link", os.readlink(path))
        elif path.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = (path.read_bytes(), bool(path.stat().st_mode & 0o100))
    return out


def test_pack_unpack_round_trip_zstd(snapshot, tmp_path):
    root, store, snap = snapshot
    packed = pack(store, snap.id)
    assert packed.name == f"{snap.id}.tar.zst" and packed.read_bytes()[:4] == b"\x28\xb5\x2f\xfd"
    assert pack(store, snap.id) == packed  # reused, not rebuilt
    dest = unpack(packed, tmp_path / "step")
    assert tree(dest) == tree(root)
    assert json.loads((dest / ".kale/manifest.json").read_text())["id"] == snap.id


def test_pack_falls_back_to_gzip_without_zstandard(snapshot, tmp_path, monkeypatch):
    root, store, snap = snapshot
    monkeypatch.setattr(remote, "_zstandard", lambda: None)
    packed = pack(store, snap.id)
    assert packed.name.endswith(".tar.gz") and packed.read_bytes()[:2] == b"\x1f\x8b"
    assert tree(unpack(packed, tmp_path / "step")) == tree(root)


def test_truncated_pack_is_a_clear_error(snapshot, tmp_path):
    _, store, snap = snapshot
    packed = pack(store, snap.id)
    broken = tmp_path / "broken.tar.zst"
    broken.write_bytes(packed.read_bytes()[: packed.stat().st_size // 2])
    with pytest.raises(SnapshotError, match="not a complete snapshot pack"):
        unpack(broken, tmp_path / "step")


def test_upload_download_unpack_through_seaweedfs(snapshot, s3_env, tmp_path):
    root, store, snap = snapshot
    packed = pack(store, snap.id)
    url = upload(packed, f"s3://{s3_env.bucket}/pipelines/run-1/")
    assert url == f"s3://{s3_env.bucket}/pipelines/run-1/{packed.name}"
    head = s3_env.client().head_object(Bucket=s3_env.bucket, Key=f"pipelines/run-1/{packed.name}")
    assert head["ContentLength"] == packed.stat().st_size

    fetched = download(url, tmp_path / "fetched.tar.zst")
    assert fetched.read_bytes() == packed.read_bytes()
    assert tree(unpack(fetched, tmp_path / "step")) == tree(root)


def test_publish_uploads_once_under_the_pipeline_root(snapshot, s3_env):
    _, store, snap = snapshot
    url = publish(store, snap.id, f"s3://{s3_env.bucket}/root")
    assert url == f"s3://{s3_env.bucket}/root/kale-snapshots/{snap.id}.tar.zst"
    assert url == published_url(f"s3://{s3_env.bucket}/root/", snap.id)
    key = url.split("/", 3)[3]
    first = s3_env.client().head_object(Bucket=s3_env.bucket, Key=key)["LastModified"]
    assert publish(store, snap.id, f"s3://{s3_env.bucket}/root/") == url
    assert s3_env.client().head_object(Bucket=s3_env.bucket, Key=key)["LastModified"] == first


STEP = """
import os, sys
from kale_magic.engines.kfp.snapshot import fetch_snapshot
fetch_snapshot(sys.argv[1], sys.argv[2])
os.chdir(sys.argv[2])
print(open('data/a.csv').read(), end='')
"""


def test_a_step_process_fetches_the_snapshot_with_credentials_from_the_environment(snapshot, s3_server,
                                                                                    tmp_path):
    _, store, snap = snapshot
    url = publish_with(s3_server, store, snap.id)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MINIO_"))}
    env.update(PYTHONPATH=str(Path(__file__).resolve().parents[1]), MINIO_ENDPOINT=s3_server.endpoint.split("//")[1],
               MINIO_ACCESS_KEY=s3_server.access_key, MINIO_SECRET_KEY=s3_server.secret_key)
    step = subprocess.run([sys.executable, "-c", STEP, url, str(tmp_path / "work")], env=env,
                          capture_output=True, text=True, cwd=tmp_path)
    assert step.returncode == 0, step.stderr
    assert step.stdout == FILES["data/a.csv"]


def publish_with(server, store: Path, snapshot_id: str) -> str:
    saved = {k: os.environ.get(k) for k in server.env()}
    os.environ.update(server.env())
    try:
        return publish(store, snapshot_id, f"s3://{server.bucket}/steps")
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def test_enter_snapshot_unpacks_and_changes_directory(snapshot, tmp_path, monkeypatch):
    root, store, snap = snapshot
    monkeypatch.chdir(tmp_path)
    workdir = enter_snapshot(pack(store, snap.id), tmp_path / "work")
    assert Path.cwd() == workdir
    assert Path("train.py").read_text() == FILES["train.py"]


def test_wrong_credentials_are_refused_clearly(snapshot, s3_env, monkeypatch):
    _, store, snap = snapshot
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    with pytest.raises(SnapshotError, match=r"refused .*\(SignatureDoesNotMatch\)|refused .*InvalidAccessKeyId"):
        upload(pack(store, snap.id), f"s3://{s3_env.bucket}/denied/")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "nobody")
    with pytest.raises(SnapshotError, match="refused"):
        download(f"s3://{s3_env.bucket}/probe", store)


def test_missing_object_and_bucket(s3_env, tmp_path):
    with pytest.raises(SnapshotError, match=f"s3://{s3_env.bucket}/no/such.tar.zst does not exist"):
        download(f"s3://{s3_env.bucket}/no/such.tar.zst", tmp_path)
    assert list(tmp_path.iterdir()) == []  # no partial download left behind
    packed = tmp_path / "x.tar.gz"
    packed.write_bytes(b"x")
    with pytest.raises(SnapshotError, match="bucket of s3://no-such-bucket/x.tar.gz does not exist"):
        upload(packed, "s3://no-such-bucket/x.tar.gz")


def test_unreachable_store(snapshot, monkeypatch, tmp_path):
    _, store, snap = snapshot
    (port,) = s3.free_ports(1)  # nothing listens there
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "a")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "b")
    with pytest.raises(SnapshotError, match=f"cannot reach the object store at http://127.0.0.1:{port}"):
        upload(pack(store, snap.id), "s3://bucket/prefix/")
    with pytest.raises(SnapshotError, match="cannot reach"):
        fetch_snapshot("s3://bucket/prefix/x.tar.zst", tmp_path / "work")


def test_not_an_object_store_url(tmp_path):
    with pytest.raises(SnapshotError, match="not an object store URL"):
        download("https://example.invalid/x", tmp_path)


def test_snapshot_importer_compiles_into_a_kfp_pipeline(tmp_path):
    from kfp import compiler, dsl
    from kfp.dsl import Artifact, Input

    @dsl.component(base_image="python:3.11")
    def step(kale_snapshot: Input[Artifact]) -> str:
        return kale_snapshot.path

    @dsl.pipeline(name="snap")
    def pipeline():
        step(kale_snapshot=snapshot_importer("s3://bucket/root/kale-snapshots/abc.tar.zst"))

    out = tmp_path / "p.yaml"
    compiler.Compiler().compile(pipeline, str(out))
    text = out.read_text()
    assert "s3://bucket/root/kale-snapshots/abc.tar.zst" in text and "importer" in text


def test_a_kfp_pipeline_step_reads_the_snapshot_through_the_importer(snapshot, s3_env, tmp_path, monkeypatch):
    """The whole KFP path, run by ``kfp.local``: publish, ``dsl.importer``, the step unpacks and reads."""
    from kfp import dsl, local
    from kfp.dsl import Artifact, Input

    _, store, snap = snapshot
    url = publish(store, snap.id, f"s3://{s3_env.bucket}/kfp-root")
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[1]))

    @dsl.component(base_image="python:3.11")
    def step(kale_snapshot: Input[Artifact]) -> str:
        import tempfile

        from kale_magic.engines.kfp.snapshot import enter_snapshot

        enter_snapshot(kale_snapshot, tempfile.mkdtemp())
        return open("data/a.csv").read()

    @dsl.pipeline(name="snapshot-e2e")
    def pipeline() -> str:
        return step(kale_snapshot=snapshot_importer(url)).output

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    assert pipeline().output == FILES["data/a.csv"]
