"""Run the ``kale-magic`` command as users do: a real subprocess with this checkout importable."""

import os
import subprocess
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]


def kernel_env():
    """The environment of a process (or kernel) that imports this checkout's kale_magic."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def kale_magic(*args, cwd=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "kale_magic.cli", *map(str, args)],
                          cwd=cwd, env=kernel_env(), capture_output=True, text=True, timeout=timeout)


def code(source, *tags):
    cell = new_code_cell(source)
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def write(path, *cells, **metadata):
    nb = new_notebook(cells=list(cells))
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "Python 3"}
    nb.metadata.update(metadata)
    nbformat.write(nb, str(path))
    return path
