"""Snapshots in Kubeflow pipelines: one uploaded pack, imported once, unpacked by every step.

Compiler side, inside the ``@dsl.pipeline`` function: ``snapshot_importer(url)``
returns the output of a ``dsl.importer`` task; pass it to each step component's
``Input[Artifact]`` parameter.  Step side, before the step's code runs:
``enter_snapshot(artifact.path, workdir)`` unpacks the pack the KFP launcher has
downloaded and makes ``workdir`` the current directory.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ...snapshot.errors import SnapshotError
from ...snapshot.remote import download, unpack

INPUT_NAME = "kale_snapshot"


def snapshot_importer(url: str):
    """A ``dsl.importer`` for the packed snapshot at ``url`` (call inside a pipeline function)."""
    from kfp import dsl

    task = dsl.importer(artifact_uri=url, artifact_class=dsl.Artifact, reimport=False,
                        metadata={"kale": "workspace snapshot"})
    task.set_display_name("workspace snapshot")
    return task.output


def enter_snapshot(artifact, workdir: str | Path) -> Path:
    """Unpack the snapshot into ``workdir`` and change into it, so relative paths read it.

    ``artifact`` is the step's input artifact (or a path).  On a cluster the KFP
    launcher has already downloaded it to ``artifact.path``; where nothing did
    (``kfp.local``, a launcher without object-store access) it is fetched from
    ``artifact.uri`` with the store credentials in the environment.
    """
    path = Path(getattr(artifact, "path", artifact))
    if path.is_file():
        workdir = unpack(path, Path(workdir))
    elif getattr(artifact, "uri", None):
        workdir = fetch_snapshot(artifact.uri, workdir)
    else:
        raise SnapshotError(f"the workspace snapshot {path} is missing in this step's container")
    os.chdir(workdir)
    return workdir


def fetch_snapshot(url: str, workdir: str | Path) -> Path:
    """Download and unpack without a KFP launcher (e.g. a plain container or a test)."""
    with tempfile.TemporaryDirectory(prefix="kale-snapshot-") as tmp:
        return unpack(download(url, Path(tmp)), Path(workdir))
