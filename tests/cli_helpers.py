"""Run the ``kale-magic`` command as users do: a real subprocess with this checkout importable."""

import os
import re
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


def printed(cell) -> str:
    """What an executed cell printed: ipykernel flushes stdout on a timer, so one print may arrive as several
    stream outputs (its text, then its newline) on a busy machine."""
    return "".join(out.text for out in cell.outputs if out.output_type == "stream" and out.name == "stdout")


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


# A kernel's own log record: ipykernel formats the root logger like logging.basicConfig (LEVEL:logger:message).
_KERNEL_RECORD = re.compile(r"(?:DEBUG|INFO|WARNING|ERROR|CRITICAL):(?:tornado|asyncio|traitlets|IPKernelApp|ipykernel)"
                            r"[\w.]*:")
_LIBZMQ_ASSERTION = re.compile(r"Assertion failed: .* \(src/\w+\.cpp:\d+\)\n?$")
_TRACEBACK = re.compile(r"\s|Traceback \(most recent call last\)|During handling of|The above exception|"
                        r"[A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning)\b|$")


def own_stderr(text: str) -> str:
    """A command's stderr without the log records (and their tracebacks) of a Jupyter kernel it started.

    The kernel shares the command's stderr, and under load ipykernel logs races of its own
    ("ERROR:tornado.general:Uncaught exception in ZMQStream callback", ipykernel#1250) that say
    nothing about kale-magic, and its libzmq can abort on one ("Assertion failed: pfd.revents & POLLIN
    (src/signaler.cpp:238)"): everything kale-magic printed is kept, in order."""
    kept, in_record = [], False
    for line in text.splitlines(keepends=True):
        if _KERNEL_RECORD.match(line):
            in_record = True
        elif _LIBZMQ_ASSERTION.match(line):  # the kernel's libzmq aborting on a race of its own
            in_record = False
        elif not (in_record and _TRACEBACK.match(line)):
            in_record = False
            kept.append(line)
    return "".join(kept)
