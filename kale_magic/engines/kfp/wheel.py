"""The running kale-magic as a wheel, so a Kubeflow step installs exactly the code that compiled it.

kale-magic is on no public index, and a step must never run another version of it. At compile time
the package folder that this process imported is zipped into a wheel whose version carries a digest
of every file (``0.1.0+k1a2b3c4d5e6``): the same code always gives the same bytes and the same name
(so KFP's cache key of the environment task that carries it changes only with the code), and a step
(or an image built by ``kale-magic image``) can tell by the version alone whether it holds this exact
code. The wheel has no dependencies: what the step needs is pinned separately, to the kernel's versions.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import tempfile
import zipfile
from pathlib import Path

DISTRIBUTION = "kale-magic"
_EPOCH = (1980, 1, 1, 0, 0, 0)  # zip timestamps: fixed, so equal code gives equal bytes


def _package_dir() -> Path:
    return Path(__file__).resolve().parents[2]  # kale_magic/


def _files(package: Path) -> tuple[tuple[str, bytes], ...]:
    """(path inside the wheel, content) of every file of the package, sorted; no bytecode."""
    found = []
    for root, dirs, names in os.walk(package):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(names):
            if name.endswith((".pyc", ".pyo")):
                continue
            path = Path(root) / name
            found.append((f"{package.name}/{path.relative_to(package).as_posix()}", path.read_bytes()))
    return tuple(sorted(found))


def runtime_version(package: Path | None = None) -> str:
    """kale-magic's version plus a digest of its files: what a step must find installed."""
    from ...version import __version__

    digest = hashlib.sha256()
    for name, content in _files(package or _package_dir()):
        digest.update(name.encode() + b"\0" + hashlib.sha256(content).digest())
    return f"{__version__.split('+')[0]}+k{digest.hexdigest()[:12]}"


def wheel_name(version: str) -> str:
    return f"kale_magic-{version}-py3-none-any.whl"


def build_wheel(dest: Path, package: Path | None = None) -> Path:
    """Write the wheel into ``dest`` (reused when it is already there) and return its path."""
    version = runtime_version(package)
    path = Path(dest) / wheel_name(version)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".wheel-")
        with os.fdopen(fd, "wb") as out:
            out.write(wheel_bytes(package))
        os.replace(tmp, path)
    return path


def wheel_bytes(package: Path | None = None) -> bytes:
    """The wheel's content: stored, not deflated (the pipeline carries it lzma-compressed)."""
    package = package or _package_dir()
    version = runtime_version(package)
    dist_info = f"kale_magic-{version}.dist-info"
    entries = list(_files(package)) + [
        (f"{dist_info}/METADATA", f"Metadata-Version: 2.1\nName: {DISTRIBUTION}\nVersion: {version}\n".encode()),
        (f"{dist_info}/WHEEL", b"Wheel-Version: 1.0\nGenerator: kale-magic\nRoot-Is-Purelib: true\nTag: py3-none-any\n"),
        (f"{dist_info}/entry_points.txt", b"[console_scripts]\nkale-magic = kale_magic.cli:main\n"),
    ]
    record = "".join(f"{name},sha256={_urlsafe(content)},{len(content)}\n" for name, content in entries)
    entries.append((f"{dist_info}/RECORD", (record + f"{dist_info}/RECORD,,\n").encode()))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as wheel:
        for name, content in entries:
            info = zipfile.ZipInfo(name, _EPOCH)
            info.external_attr = 0o644 << 16
            wheel.writestr(info, content)
    return buffer.getvalue()


def _urlsafe(content: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(content).digest()).rstrip(b"=").decode()
