"""Moving a snapshot to where the steps run: one compressed tar in an S3-compatible store.

``pack`` writes the snapshot as a tar (zstd when ``zstandard`` is installed, gzip
otherwise) holding the workspace files plus the manifest at ``.kale/manifest.json``;
``upload``/``download`` move it with boto3, configured by the usual variables
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``, and the MinIO
spellings ``MINIO_ENDPOINT``, ``MINIO_ACCESS_KEY``/``MINIO_SECRET_KEY``); ``unpack``
extracts it into a step's working directory with tarfile's safe ``data`` filter.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import shutil
import tarfile
from datetime import datetime
from pathlib import Path
from urllib.parse import urlparse

from ..errors import MissingDependency
from ..files import replacing
from ..layout import KALE_DIR
from .errors import SnapshotError
from .manifest import object_name, read_manifest
from .objects import ObjectStore

MANIFEST_MEMBER = f"{KALE_DIR}/manifest.json"  # where a step finds the manifest in its workspace
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_SCHEMES = ("s3", "minio")


# packing ------------------------------------------------------------------
def pack(store: Path, snapshot_id: str) -> Path:
    """The snapshot as one compressed tar under ``<store>/packs/`` (made once, then reused)."""
    store = Path(store)
    data = read_manifest(store, snapshot_id)
    path = store / "packs" / f"{data['id']}{pack_suffix()}"
    if path.exists():
        return path
    with replacing(path) as tmp, open(tmp, "wb") as raw, _compressing(raw) as stream:
        _write_tar(stream, data, ObjectStore(store / "objects"))
    return path


def pack_suffix() -> str:
    return ".tar.zst" if _zstandard() else ".tar.gz"


def is_store(root: str) -> bool:
    """An object store URL (else a folder: the pipeline root of pipelines run under ``kfp.local``)."""
    return urlparse(root).scheme in _SCHEMES


def published_url(pipeline_root: str, snapshot_id: str) -> str:
    """Where ``publish`` puts a snapshot: known before packing, so a pipeline can be compiled first."""
    name = f"kale-snapshots/{snapshot_id}{pack_suffix()}"
    if is_store(pipeline_root):
        return f"{pipeline_root.rstrip('/')}/{name}"
    return str(Path(pipeline_root).expanduser().absolute() / name)


def _write_tar(stream, data: dict, objects: ObjectStore) -> None:
    mtime = datetime.fromisoformat(data["created"]).timestamp()
    with tarfile.open(fileobj=stream, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        manifest = json.dumps(data, sort_keys=True).encode()
        tar.addfile(_info(MANIFEST_MEMBER, mtime, size=len(manifest)), io.BytesIO(manifest))
        for rel in data["dirs"]:
            tar.addfile(_info(rel, mtime, kind=tarfile.DIRTYPE, mode=0o755))
        for entry in data["files"]:
            with open(objects.path(object_name(entry)), "rb") as content:
                tar.addfile(_info(entry["path"], mtime, size=entry["size"], mode=entry["mode"]), content)
        for link in data["symlinks"]:
            tar.addfile(_info(link["path"], mtime, kind=tarfile.SYMTYPE, linkname=link["target"]))


def _info(name: str, mtime: float, *, kind=tarfile.REGTYPE, size=0, mode=0o644, linkname="") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mode, info.mtime, info.linkname = kind, size, mode, mtime, linkname
    return info


def unpack(pack_path: Path, dest: Path) -> Path:
    """Extract a pack into ``dest`` (created if needed; existing files are overwritten)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with open(pack_path, "rb") as raw, _decompressing(raw) as stream:
        try:
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                # the "data" filter is missing before Python 3.11.4 (Debian 12's 3.11.2): our own packs then
                tar.extractall(dest, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
        except (tarfile.TarError, EOFError, OSError) as error:
            if isinstance(error, OSError) and error.errno is not None:
                raise
            raise SnapshotError(f"{pack_path} is not a complete snapshot pack ({error})") from None
    return dest


def _zstandard():
    try:
        import zstandard
    except ImportError:
        return None
    return zstandard


@contextlib.contextmanager
def _compressing(raw):
    zstd = _zstandard()
    if zstd is None:
        with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=0) as stream:
            yield stream
        return
    compressor = zstd.ZstdCompressor(level=3, threads=-1, write_checksum=True)
    with compressor.stream_writer(raw, closefd=False) as stream:
        yield stream


@contextlib.contextmanager
def _decompressing(raw):
    magic = raw.read(4)
    raw.seek(0)
    if magic != _ZSTD_MAGIC:
        with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
            yield stream
        return
    zstd = _zstandard()
    if zstd is None:
        raise MissingDependency("zstandard", "Unpacking a zstd-compressed snapshot")
    with zstd.ZstdDecompressor().stream_reader(raw, closefd=False) as stream:
        yield stream


# object store -------------------------------------------------------------
def upload(pack_path: Path, url: str, what: str = "the snapshot") -> str:
    """Put the pack at ``url`` (``s3://bucket/key``; a URL ending in ``/`` gets the pack's name)."""
    pack_path = Path(pack_path)
    if url.endswith("/"):
        url += pack_path.name
    bucket, key = _split(url)
    client = _client()
    with _store_errors(client, url, f"upload {what} to"):
        client.upload_file(str(pack_path), bucket, key)
    return url


def download(url: str, dest: Path) -> Path:
    """Fetch ``url`` to ``dest`` (a file path, or an existing folder to put it in)."""
    bucket, key = _split(url)
    dest = Path(dest)
    if dest.is_dir():
        dest = dest / key.rsplit("/", 1)[-1]
    client = _client()
    with replacing(dest) as tmp, _store_errors(client, url, "download the snapshot from"):
        client.download_file(bucket, key, str(tmp))
    return dest


def list_keys(url: str) -> list[str]:
    """The URLs of every object under the prefix ``url`` (``s3://bucket/prefix/``)."""
    bucket, prefix = _split(url)
    client = _client()
    found = []
    with _store_errors(client, url, "list"):
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            found += [f"{url.split('://')[0]}://{bucket}/{item['Key']}" for item in page.get("Contents", [])]
    return sorted(found)


def download_prefix(url: str, dest: Path) -> Path:
    """Every object under the prefix ``url`` into the folder ``dest``, keeping the paths below the prefix
    (written beside it and renamed into place, so a reader never sees half of it)."""
    prefix = url.rstrip("/") + "/"
    dest = Path(dest)
    with replacing(dest) as tmp:
        tmp.unlink()
        tmp.mkdir()
        for key in list_keys(prefix):
            target = tmp / key[len(prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            download(key, target)
    return dest


def publish(store: Path, snapshot_id: str, pipeline_root: str) -> str:
    """Pack the snapshot and put it under ``<pipeline_root>/kale-snapshots/`` unless already there
    (the pipeline root is an object store, or a folder for pipelines run under ``kfp.local``)."""
    path = pack(store, snapshot_id)
    url = published_url(pipeline_root, path.name.split(".", 1)[0])
    if is_store(url):
        return upload_if_absent(path, url)
    target = Path(url)
    if not (target.is_file() and target.stat().st_size == path.stat().st_size):
        with replacing(target) as tmp:
            shutil.copyfile(path, tmp)
            tmp.chmod(0o644)  # the steps' containers read it as another user
    return url


def upload_if_absent(path: Path, url: str, what: str = "the snapshot") -> str:
    """Upload ``path`` to ``url`` unless an object of the same size is there already."""
    bucket, key = _split(url)
    from botocore.exceptions import BotoCoreError, ClientError

    client = _client()
    try:
        if client.head_object(Bucket=bucket, Key=key)["ContentLength"] == path.stat().st_size:
            return url
    except (BotoCoreError, ClientError):  # absent, or the store is unwell: upload says which
        pass
    return upload(path, url, what)


def _split(url: str) -> tuple[str, str]:
    parsed = urlparse(url)
    if parsed.scheme not in _SCHEMES or not parsed.netloc or not parsed.path.strip("/"):
        raise SnapshotError(f"'{url}' is not an object store URL; use s3://bucket/path/to/object")
    return parsed.netloc, parsed.path.lstrip("/")


def _endpoint() -> str | None:
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "S3_ENDPOINT", "MINIO_ENDPOINT"):
        value = os.environ.get(name)
        if value:
            return value if "://" in value else f"http://{value}"
    return None


def _client():
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise MissingDependency("boto3", "Sending a snapshot to an S3 object store") from None
    env = os.environ.get
    return boto3.client(
        "s3", endpoint_url=_endpoint(),
        aws_access_key_id=env("AWS_ACCESS_KEY_ID") or env("MINIO_ACCESS_KEY") or None,
        aws_secret_access_key=env("AWS_SECRET_ACCESS_KEY") or env("MINIO_SECRET_KEY") or None,
        region_name=env("AWS_REGION") or env("AWS_DEFAULT_REGION") or "us-east-1",
        config=Config(connect_timeout=5, read_timeout=60, retries={"max_attempts": 2, "mode": "standard"},
                      s3={"addressing_style": "path"}))


_REFUSED = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "Forbidden"}
_MISSING = {"NoSuchKey", "404", "NotFound"}


@contextlib.contextmanager
def _store_errors(client, url: str, action: str):
    """Turn botocore's exceptions into one sentence naming the store and the fix."""
    from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

    where = client.meta.endpoint_url
    try:
        yield
    except NoCredentialsError:
        raise SnapshotError(f"no credentials to {action} {url}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                            "(or MINIO_ACCESS_KEY and MINIO_SECRET_KEY), in a Kubeflow notebook from the keys of "
                            "the namespace's artifact Secret (mlpipeline-minio-artifact), with AWS_ENDPOINT_URL "
                            "pointing at the store") from None
    except EndpointConnectionError:
        raise SnapshotError(f"cannot reach the object store at {where} to {action} {url}; check that "
                            "it is running and that AWS_ENDPOINT_URL points to it") from None
    except Exception as error:
        cause = error if isinstance(error, ClientError) else error.__context__
        if not isinstance(cause, ClientError):
            if isinstance(error, BotoCoreError):
                raise SnapshotError(f"could not {action} {url} at {where}: {error}") from None
            raise
        code = cause.response.get("Error", {}).get("Code", "")
        if code in _REFUSED:
            raise SnapshotError(f"the object store at {where} refused to let us {action} {url} ({code}); "
                                "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY") from None
        if code == "NoSuchBucket":
            raise SnapshotError(f"the bucket of {url} does not exist at {where}; create it or "
                                "choose another pipeline root") from None
        if code in _MISSING:
            raise SnapshotError(f"{url} does not exist at {where}") from None
        raise SnapshotError(f"could not {action} {url} at {where}: {cause}") from None
