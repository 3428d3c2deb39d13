"""What a run depends on besides its files: interpreter, installed distributions, the cells."""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import sys


def capture_environment(cells: list[str] | None = None) -> dict:
    """A JSON-able description of this kernel's environment.

    The notebook file itself is stored as an object by the caller (it may live
    outside the snapshotted root or be ignored there).
    """
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "executable": sys.executable,
        "packages": installed_packages(),
        "cells": list(cells or []),
    }


def installed_packages() -> dict[str, str]:
    """Distribution name -> version, as ``pip freeze`` would see them.

    Computed again only when a folder on ``sys.path`` changed (an install adds or
    removes a ``*.dist-info`` folder, which changes the folder's mtime).
    """
    return dict(_read_packages(path_state()))


def path_state() -> tuple:
    """``sys.path`` with each folder's mtime: changes when an install adds or removes a distribution."""
    return tuple((entry, _mtime(entry)) for entry in sys.path)


def _mtime(path: str) -> int | None:
    try:
        return os.stat(path or ".").st_mtime_ns
    except OSError:
        return None


@functools.lru_cache(maxsize=1)
def _read_packages(path_state: tuple) -> dict[str, str]:
    """``path_state`` (sys.path entries and their mtimes) is only the cache key."""
    packages: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        # The two header lines, without the email parser importlib.metadata uses (10x slower).
        text = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
        fields = {}
        for line in text.splitlines():
            if not line:
                break
            name, sep, value = line.partition(":")
            if sep and name in ("Name", "Version"):
                fields.setdefault(name, value.strip())
        if "Name" in fields:
            packages.setdefault(fields["Name"], fields.get("Version", ""))
    return dict(sorted(packages.items(), key=lambda kv: kv[0].lower()))
