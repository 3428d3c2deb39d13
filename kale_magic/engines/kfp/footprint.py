"""How much a Kubeflow step unpacks before its code runs, estimated at compile time; past a size, the advice
to build an image instead.

On a stock image the ``kale-environment`` task installs the pinned distributions once per run and every step
then unpacks those its code imports (:attr:`.setup.Setup.unpacks`). Their size is read from the kernel's own
installation, which holds the same versions: the bytes each distribution's ``RECORD`` lists
(``importlib.metadata``), nothing downloaded. Wheels for Linux and for the kernel's platform differ a little;
an estimate is all the advice needs.

:data:`UNPACK_BYTES_PER_SECOND`, on disk, measured on the shared 2-core machine (2026-12-07, load 10-12;
docs/kubeflow.md): GNU tar in a container of the stock image unpacked the environment's uncompressed
archives into the container's file system at 25-65 MiB per CPU second (numpy with the step runtime and kfp,
89 MiB in 1,900 files: 3.1-4.0 s of CPU, 6.8-8.5 s wall; pandas + scikit-learn with them, 524 MiB: 8.1-12.9 s
of CPU, 22-36 s wall); 40 MiB/s is taken. :data:`UNPACK_MEMORY_BYTES_PER_SECOND`, into a memory volume: the
four archives of numpy, pandas, scipy and scikit-learn (343 MiB, 8,600 files), one ``tar`` each at once as
the bootstrap runs them, into a tmpfs in 0.22-0.25 s (1.4-1.6 GiB/s; the container's file system: 0.75-3.8 s),
load 0.3; a third of it, 512 MiB/s, is taken for a busy node.

:data:`ADVICE_BYTES`, 128 MiB: on disk ~3 s of unpacking, more than 1.5 times the floor of a step on this
runner (a container started and the step's own import: 1.8 s under heavy load, 0.3-0.4 s quiet); in memory
it unpacks in a fraction of a second, but on a cluster every step's launcher still downloads all it receives
(KFP's ``downloadArtifacts``: at an in-cluster store's 100-odd MB/s, over a second) and requests that much
memory more, which an image does not. The smallest data-science step, numpy with the runtime (~90 MiB),
stays under it, so the note is kept for what an image changes most rather than shown for every notebook;
one that adds pandas and scikit-learn (~520 MiB) or torch (~850 MiB) is over. Above it, ``kale-magic image``
(everything installed in the image: nothing downloaded or unpacked, no environment task) is what makes the
steps start fast, and the compile says so in one line: a note, never a refusal.

Where a step unpacks: its cost is the disk, not tar (a 72 MB numpy archive into the container's own file
system 1.58-1.74 s, into a tmpfs 0.09-0.13 s, same container), so each step that takes the environment gets a
memory-backed ``emptyDir`` (a tmpfs; kfp-kubernetes' ``empty_dir_mount``, KFP 2.3+) at :data:`UNPACK_MOUNT`,
sized by :func:`unpack_volume` from every archive it receives, and its bootstrap unpacks there. Its files
count against the pod's memory, so the volume's size is also the step's memory request (the scheduler places
the pod where they fit) unless ``%%step --memory`` sets one; a step whose ``--memory`` limit could not hold
them with as much again left for its code (the bootstrap applies the same rule to the limit the pod has, which
a LimitRange may set), one above :data:`MEMORY_UNPACK_MAX`, and one receiving an archive whose size the kernel
cannot tell (another version is installed here, or none) unpack on disk as before.
The estimate is the kernel's platform's; on a volume fuller than estimated the step unpacks on disk instead.
"""

from __future__ import annotations

import csv
import importlib.metadata
import os
from dataclasses import dataclass
from functools import lru_cache

from ...files import human_size

ADVICE_BYTES = 128 << 20  # one step's unpacking past this: the compile advises an image
UNPACK_BYTES_PER_SECOND = 40 << 20  # GNU tar into a step container of the stock image, per CPU second
UNPACK_MEMORY_BYTES_PER_SECOND = 512 << 20  # the same into its memory volume (a third of a quiet machine's rate)
UNPACK_MOUNT = "/kale-unpacked"  # the memory-backed emptyDir a step unpacks its environment into
MEMORY_UNPACK_MAX = 1 << 30  # above: on disk (the compile advises an image long before)
# the volume holds the received archives' installed size, a quarter more (another platform's wheels: numpy's
# Linux wheel carries OpenBLAS, a macOS one does not) and room for kale-magic's wheel and the files no RECORD
# lists (the kernel's own kale-magic may be an editable install, which RECORD lists as a few bytes)
UNPACK_MARGIN = 1.25
UNPACK_SLACK = 64 << 20


@dataclass(frozen=True)
class Footprint:
    environment: int  # bytes the environment task installs (every distribution it packs)
    step: str  # the step that unpacks the most
    unpacked: int  # bytes that step unpacks before its code runs
    in_memory: bool = False  # into its memory volume (else on disk)

    @property
    def unpack_seconds(self) -> float:
        return self.unpacked / (UNPACK_MEMORY_BYTES_PER_SECOND if self.in_memory else UNPACK_BYTES_PER_SECOND)


def footprint(setup, image: str) -> Footprint | None:
    """The size of ``image``'s environment and of the largest step unpack from it; None without an environment
    task that installs (an image that holds everything: ``Kfp.install_packages = False``) and for an image
    other than a stock Python one, whose contents (which the environment task does not install again) the
    compile cannot know."""
    from .bootstrap import archive_name
    from .setup import PYTHON_IMAGE

    env = setup.environments.get(image)
    if env is None or not env.requirements.pins or not PYTHON_IMAGE.match(image.rpartition("/")[2]):
        return None
    sizes = {archive_name(name): installed_bytes(name, version) for name, version in env.requirements.pins}
    steps = [s for s, i in setup.images.items() if i == image and s in setup.unpacks]
    if not steps:
        return None
    per_step = {s: sum(sizes.get(archive, 0) for archive in setup.unpacks[s]) for s in steps}
    largest = max(steps, key=lambda s: (per_step[s], -steps.index(s)))
    return Footprint(sum(sizes.values()), largest, per_step[largest], setup.volumes.get(largest, (0, ""))[0] > 0)


def image_advice(setup, notebook=None) -> str:
    """One line for the compile when a step would unpack more than :data:`ADVICE_BYTES`; else "".
    ``notebook``: the notebook file's path, named in the command (else NOTEBOOK)."""
    from pathlib import Path

    found = [f for f in (footprint(setup, image) for image in setup.environments) if f is not None]
    big = max(found, key=lambda f: f.unpacked, default=None)
    if big is None or big.unpacked <= ADVICE_BYTES:
        return ""
    name = Path(notebook).name if notebook else "NOTEBOOK"
    return (f"note: the steps' environment is {human_size(big.environment)} installed and step '{big.step}' unpacks "
            f"{human_size(big.unpacked)} of it before its code runs (~{big.unpack_seconds:.1f} s per step "
            f"{'in memory' if big.in_memory else 'on disk'}, after downloading it); to start steps faster, build an "
            f"image with everything installed: kale-magic image {name} -t TAG, then "
            "%config Kfp.base_image = 'TAG' and %config Kfp.install_packages = False")


def unpack_volume(setup, step: str, memory: str | None) -> tuple[int, str]:
    """The size in bytes of the memory-backed volume ``step`` unpacks its environment into, 0 for the disk,
    and why not memory (""). ``memory``: the step's ``--memory`` (its limit), None without one."""
    from .bootstrap import archive_name

    env = setup.environment(step)
    if env is None or not env.requirements.pins:  # nothing installed: nothing to unpack
        return 0, ""
    pins = {archive_name(name): (name, version) for name, version in env.requirements.pins}
    received = (set(pins) - set(env.archives)) | set(setup.receives.get(step, ()))
    sizes = {archive: installed_bytes(*pins[archive]) for archive in sorted(received)}
    unknown = [pins[archive][0] for archive, size in sizes.items() if not size]
    if unknown:
        return 0, f"the notebook's kernel could not tell the installed size of {', '.join(unknown)}"
    size = -(-int(sum(sizes.values()) * UNPACK_MARGIN + UNPACK_SLACK) // (1 << 20)) << 20  # whole MiB
    if size > MEMORY_UNPACK_MAX:
        return 0, f"its {human_size(size)} are more than {human_size(MEMORY_UNPACK_MAX)}"
    if memory is not None and 2 * size > quantity_bytes(memory):
        return 0, f"--memory {memory} cannot hold its {human_size(size)} and as much again for its code"
    return size, ""


def quantity_bytes(quantity: str) -> int:
    """A Kubernetes memory quantity (``512Mi``, ``2G``, ``1000``) in bytes."""
    import re

    number, unit = re.fullmatch(r"(\d+)([EPTGMK]i?)?", quantity).groups()
    if not unit:
        return int(number)
    power = "KMGTPE".index(unit[0]) + 1
    return int(number) * (1024 ** power if unit.endswith("i") else 1000 ** power)


@lru_cache(maxsize=1024)
def installed_bytes(name: str, version: str) -> int:
    """Bytes of the installed distribution ``name`` (the files its RECORD lists); 0 when the kernel has another
    version or none (the estimate leaves it out)."""
    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return 0
    if dist.version != version:
        return 0
    base = str(dist.locate_file(""))
    total = 0
    for row in csv.reader((dist.read_text("RECORD") or "").splitlines()):
        if len(row) >= 3 and row[2].isdigit():
            total += int(row[2])
        elif row:  # RECORD leaves its own size (and that of .pyc files pip compiled) out: read it from the disk
            try:
                total += os.stat(os.path.join(base, row[0])).st_size
            except OSError:
                pass
    return total
