"""What a run depends on besides its files: interpreter, installed distributions, the cells."""

from __future__ import annotations

import importlib.metadata
import platform
import sys


def capture_environment(cells: list[str] | None = None) -> dict:
    """A JSON-able description of this kernel's environment.

    The notebook file itself is stored as an object by the caller (it may live
    outside the snapshotted root or be ignored there).
    """
    packages: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            packages.setdefault(name, dist.version)
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "executable": sys.executable,
        "packages": dict(sorted(packages.items(), key=lambda kv: kv[0].lower())),
        "cells": list(cells or []),
    }
