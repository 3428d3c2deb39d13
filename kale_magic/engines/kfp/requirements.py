"""What a Kubeflow step needs installed, pinned to the versions the kernel has.

A step imports what its ``%%imports``, ``%%functions`` and own cells import, plus what kale-magic's
step runtime and the marshal backends of its values use. Each top-level module is resolved to the
distribution that provides it (``importlib.metadata.packages_distributions``), and the distributions'
dependencies are followed through their metadata, so the step gets the kernel's exact versions of
everything it loads, and nothing else. Markers are evaluated for the step image, not the kernel: Linux,
:data:`TARGET_MACHINE`, the kernel's Python (the compiler refuses an image of another one). A dependency
only the image's platform needs (torch's ``nvidia-*`` libraries under a macOS kernel) that the kernel
lacks cannot be pinned, and is refused. :func:`check_available` asks pip, before anything is uploaded,
whether every pin exists for that platform on the configured indexes. Modules of the
notebook's own folder travel in the workspace snapshot instead; a library installed only from a
local path or in editable mode cannot be installed in a container, and is refused before anything
is uploaded.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import re
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ...errors import ValidationError

# what kale-magic's step runtime imports (IPython executes the notebook; dill and xxhash marshal)
RUNTIME_DISTRIBUTIONS = ("ipython", "dill", "xxhash")
# those of the runtime's closure a step loads before its code runs (its IPython shell: pygments for its
# tracebacks, traitlets): a step unpacks them at start, the rest of the closure only if imported
# (prompt_toolkit, wcwidth, pexpect, stack_data, ...: 12 of the 40 MB the runtime adds to a step)
RUNTIME_STARTUP = ("ipython", "ipython-pygments-lexers", "pygments", "traitlets", "dill", "xxhash")
# dependencies a step never loads unless it imports them itself: IPython's completer (jedi, a third of
# the step runtime's size) is only imported when it is installed
UNUSED_DEPENDENCIES = {"ipython": frozenset({"jedi"})}
SELF = "kale-magic"  # delivered as its own wheel, never from an index
TARGET_MACHINE = "x86_64"  # the step images' architecture (the official python:X.Y on amd64 nodes)
TARGET_PLATFORMS = (f"manylinux_2_28_{TARGET_MACHINE}", f"manylinux2014_{TARGET_MACHINE}", f"linux_{TARGET_MACHINE}")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Requirements:
    """``pins``: distribution -> version, sorted by name; the lines pip installs with ``--no-deps``."""

    pins: tuple[tuple[str, str], ...]

    def lines(self) -> list[str]:
        return [f"{name}=={version}" for name, version in self.pins]

    def __or__(self, other: "Requirements") -> "Requirements":
        merged = {canonical(n): (n, v) for n, v in (*self.pins, *other.pins)}
        return Requirements(tuple(sorted(merged.values(), key=lambda p: canonical(p[0]))))


def step_requirements(sources, backend_modules=(), workspace: Path | None = None,
                      where: str = "the notebook", runtime: bool = True) -> Requirements:
    """The pinned closure for code ``sources`` whose values use ``backend_modules``.

    ``workspace`` is the folder the step's snapshot carries (None: no snapshot); ``where`` names the
    cells in messages (e.g. "step 'train'"); ``runtime`` False leaves out the step runtime's own
    distributions (unless the code imports them): what the step's code itself loads.
    """
    from ...cache.keys import imported_modules

    roots = set(RUNTIME_DISTRIBUTIONS if runtime else ())
    for module in sorted(imported_modules(sources) | set(backend_modules)):
        dist = _distribution_of(module, workspace, where)
        if dist is not None:
            roots.add(dist)
    return Requirements(tuple(sorted(closure(roots).items(), key=lambda p: canonical(p[0]))))


def _distribution_of(module: str, workspace: Path | None, where: str) -> str | None:
    """The distribution providing ``module``; None for kale-magic and what the workspace snapshot carries."""
    if module == "kale_magic" or workspace is not None and (
            (workspace / module).is_dir() or (workspace / f"{module}.py").is_file()):
        return None
    names = packages_distributions().get(module)
    dist = importlib.metadata.distribution(names[0]) if names else _editable_owner(module)
    if dist is None:
        origin = _origin(module)
        if origin in ("built-in", "frozen"):
            return None
        raise ValidationError(
            f"Module '{module}' imported by {where} comes from {origin}, which no installed distribution "
            "provides and the workspace snapshot does not carry: move it into the notebook's folder, or "
            "install it as a package.")
    _refuse_local(dist, module, where)
    return dist.metadata["Name"]


def _origin(module: str) -> str:
    spec = sys.modules[module].__spec__ if module in sys.modules else importlib.util.find_spec(module)
    return getattr(spec, "origin", None) or "?"


def _editable_owner(module: str):
    """The distribution installed in editable mode whose folder holds ``module`` (editable installs
    point ``sys.path`` at their source, so ``packages_distributions`` does not list their modules)."""
    origin = _origin(module)
    for dist in importlib.metadata.distributions():
        url = _direct_url(dist).get("url", "")
        if url.startswith("file://") and origin.startswith(url[len("file://"):].rstrip("/") + "/"):
            return dist
    return None


def _direct_url(dist) -> dict:
    try:
        return json.loads(dist.read_text("direct_url.json") or "{}")
    except ValueError:
        return {}


def _refuse_local(dist, module: str, where: str) -> None:
    """A distribution installed from a folder or in editable mode is on no index a container can reach."""
    origin = _direct_url(dist)
    if not str(origin.get("url", "")).startswith("file:"):
        return
    how = "in editable mode" if origin.get("dir_info", {}).get("editable") else "from a local path"
    raise ValidationError(
        f"Module '{module}' imported by {where} belongs to {dist.metadata['Name']}, installed {how} "
        f"({origin['url']}), which a Kubeflow step cannot install: publish it to an index "
        "(Kfp.pip_index_urls), put its package folder in the notebook's folder so the snapshot carries it, "
        "or build an image that holds it (kale-magic image, Kfp.base_image).")


def packages_distributions() -> dict[str, list[str]]:
    """Top-level module -> distributions, read again only after an install changed a ``sys.path`` folder."""
    from ...snapshot.environment import path_state

    return _packages_distributions(path_state())


@lru_cache(maxsize=1)
def _packages_distributions(path_state: tuple) -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def closure(roots) -> dict[str, str]:
    """Installed distribution name -> version for ``roots`` and everything they require here."""
    from ...snapshot.environment import path_state

    return dict(_closure(frozenset(roots), path_state()))


@lru_cache(maxsize=256)
def _closure(roots: frozenset, path_state: tuple) -> tuple[tuple[str, str], ...]:
    """``path_state`` (sys.path folders and their mtimes) is only the cache key: an install changes it."""
    from packaging.markers import default_environment
    from packaging.requirements import Requirement

    kernel = default_environment()
    environment = target_environment(kernel)
    found: dict[str, tuple[str, str]] = {}
    extras_seen: dict[str, set[str]] = {}
    todo = [(name, frozenset()) for name in sorted(roots)]
    while todo:
        name, extras = todo.pop()
        key = canonical(name)
        if key == canonical(SELF) or key in found and extras <= extras_seen[key]:
            continue
        info = _distribution(key, path_state)
        if info is None:
            continue  # an optional dependency that is not installed: the kernel runs without it too
        found[key] = info[:2]
        extras_seen[key] = extras_seen.get(key, set()) | extras
        for text in info[2]:
            requirement = Requirement(text)
            if canonical(requirement.name) in UNUSED_DEPENDENCIES.get(key, ()):
                continue
            wanted = {""} | extras_seen[key]
            if requirement.marker is None or any(requirement.marker.evaluate({**environment, "extra": e})
                                                 for e in wanted):
                if requirement.marker is not None and _distribution(canonical(requirement.name), path_state) is None \
                        and not any(requirement.marker.evaluate({**kernel, "extra": e}) for e in wanted):
                    raise ValidationError(
                        f"{info[0]} needs {requirement.name} on the Linux step image ({requirement}), which this "
                        f"kernel ({kernel['sys_platform']}) does not have, so its version cannot be pinned: build "
                        "the step image with kale-magic image on Linux (Kfp.base_image, Kfp.install_packages = "
                        "False).")
                todo.append((requirement.name, frozenset(requirement.extras)))
    return tuple(sorted(found.values()))


def target_environment(kernel: dict) -> dict:
    """Marker variables of the step image: Linux on :data:`TARGET_MACHINE`, with the kernel's Python."""
    return {**kernel, "os_name": "posix", "sys_platform": "linux", "platform_system": "Linux",
            "platform_machine": TARGET_MACHINE, "platform_release": "", "platform_version": ""}


@lru_cache(maxsize=64)
def check_available(requirements: Requirements, pip_options: tuple[str, ...], python: str) -> None:
    """Refuse, naming the package, a pin that pip finds for no Linux wheel of ``python`` (nor an sdist) on the
    indexes the steps install from (``pip_options``; none: this machine's pip configuration)."""
    import subprocess
    import tempfile

    lines = requirements.lines()
    if not lines:
        return
    platforms = [arg for p in TARGET_PLATFORMS for arg in ("--platform", p)]
    with tempfile.TemporaryDirectory(prefix="kale-pins-") as target:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--no-deps", "--ignore-installed",
             "--disable-pip-version-check", "--target", target, "--python-version", python,
             "--implementation", "cp", *platforms, *pip_options, *lines],
            capture_output=True, text=True)
    if result.returncode == 0:
        return
    missing = re.search(r"(?:No matching distribution found for|Could not find a version that satisfies "
                        r"the requirement) (\S+)", result.stderr)
    what = missing.group(1) if missing else "a pinned package"
    raise ValidationError(
        f"{what}, pinned to the kernel's version for the steps, is on none of the indexes the steps install from "
        f"for Linux {TARGET_MACHINE}, Python {python} ({(result.stderr.strip().splitlines() or ['pip failed'])[-1]}): "
        "add the index that has it to Kfp.pip_index_urls (a +cpu torch is on https://download.pytorch.org/whl/cpu), "
        "or build the step image with kale-magic image (Kfp.base_image, Kfp.install_packages = False).")


@lru_cache(maxsize=4096)
def _distribution(name: str, path_state: tuple) -> tuple[str, str, tuple[str, ...]] | None:
    """(name as installed, version, requirements) of an installed distribution; None when it is not."""
    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return None
    return dist.metadata["Name"], dist.version, tuple(dist.requires or ())
