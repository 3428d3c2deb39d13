"""Files a compiled pipeline takes from its pipeline root: kale-magic's wheel, large step notebooks.

The pipeline root (``Kale.pipeline_root``) is where KFP keeps a run's artifacts: an object store
(``s3://bucket/prefix``, ``minio://mlpipeline/v2/artifacts``), or, for ``kfp.local``, a folder. What a
step needs before it can run is put there under ``kale-<kind>/<name>``, named by its content, so it
is written once and any number of pipelines and runs share it; the compiled pipeline brings each file
to the steps that need it with a ``dsl.importer`` (the KFP launcher downloads it into the step's pod).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from urllib.parse import urlparse

STORE_SCHEMES = ("s3", "minio")


def is_store(root: str) -> bool:
    return urlparse(root).scheme in STORE_SCHEMES


def delivery_url(root: str, kind: str, name: str) -> str:
    """Where ``publish`` puts a file: known before anything is written, so the YAML can name it."""
    if is_store(root):
        return f"{root.rstrip('/')}/kale-{kind}/{name}"
    return str(Path(root).expanduser().absolute() / f"kale-{kind}" / name)


def publish(path: Path, url: str) -> str:
    """Put ``path`` at ``url`` unless a file of the same size is already there."""
    if is_store(url):
        from .snapshot.remote import upload_if_absent

        return upload_if_absent(Path(path), url)
    target = Path(url)
    if target.is_file() and target.stat().st_size == Path(path).stat().st_size:
        return url
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    os.close(fd)
    try:
        shutil.copyfile(path, tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return url
