"""The one reader and writer of ``.ipynb`` files: users' notebooks, step notebooks, executed ones.

A current (v4) notebook is read and written as plain JSON, byte for byte as nbformat
writes it; nbformat itself is imported only to upgrade an older format.  Importing it
pulls in jsonschema, which with JupyterLab's dependencies installed compiles dozens
of grammars — seconds on every kernel's first run and in every step container.
"""

from __future__ import annotations

import errno
import json
import uuid
import warnings
from pathlib import Path

from .errors import KaleError
from .files import atomic_write


class NotebookFileError(KaleError):
    """A file is not a Python notebook we can read, or cannot be written."""

    label = "kale-magic"


class Node(dict):
    """A notebook as a dict with attribute access, like nbformat's ``NotebookNode``."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        self[name] = value


def read_notebook(path: str | Path) -> Node:
    """The Python notebook at ``path`` as v4, its multiline strings (sources, outputs) joined as nbformat
    joins them, or one sentence saying why it cannot be read."""
    path = Path(path)
    if not path.exists():
        raise NotebookFileError(f"{path}: no such file.")
    if path.is_dir():
        raise NotebookFileError(f"{path}: is a directory, not a notebook.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise NotebookFileError(f"{path}: not a notebook (not UTF-8 text).") from None
    except json.JSONDecodeError as exc:
        raise NotebookFileError(f"{path}: not a notebook (invalid JSON: {exc.msg} at line "
                                f"{exc.lineno}).") from None
    except OSError as exc:
        raise NotebookFileError(f"{path}: cannot read ({exc.strerror}).") from None
    if not (isinstance(data, dict) and isinstance(data.get("cells"), list)
            and isinstance(data.get("nbformat"), int)):
        raise NotebookFileError(f"{path}: not a Jupyter notebook (no 'cells' and 'nbformat').")
    nb = _plain_v4(data) or _upgraded(data, path)
    language = _kernel_language(nb)
    if language not in (None, "python"):
        raise NotebookFileError(f"{path}: a {language} notebook; kale-magic runs Python notebooks.")
    return nb


def new_cell_id() -> str:
    """A cell id as nbformat makes one (``nbformat.corpus.words.generate_corpus_id``: 8 hex digits)."""
    return uuid.uuid4().hex[:8]


def new_code_cell(source: str = "") -> Node:
    """A v4.5 code cell, as ``nbformat.v4.new_code_cell`` makes it, without importing nbformat."""
    return Node(id=new_cell_id(), cell_type="code", metadata=Node(), execution_count=None, source=source,
                outputs=[])


def write_notebook(nb: dict, path: str | Path) -> None:
    """Atomically, byte for byte as ``nbformat.write`` would (multiline strings as lists of lines, the
    metadata nbformat calls transient left out), into a folder that exists: a mistyped ``--output`` makes
    no folders."""
    text = json.dumps(_without_transient(_convert_text(nb, _split)), sort_keys=True, indent=1,
                      ensure_ascii=False) + "\n"
    try:
        if not Path(path).parent.is_dir():
            raise FileNotFoundError(errno.ENOENT, f"no folder {Path(path).parent}")
        atomic_write(path, text)
    except OSError as exc:
        raise NotebookFileError(f"{path}: cannot write ({exc.strerror}).") from None


def as_nbformat(nb):
    """``nb`` as nbformat's own notebook object, for what hands it to nbformat or nbclient."""
    import nbformat

    return nb if isinstance(nb, nbformat.NotebookNode) else nbformat.from_dict(nb)


def _plain_v4(data: dict) -> Node | None:
    """A current notebook as :class:`Node` s, or None to let nbformat read it."""
    if data["nbformat"] != 4 or not all(isinstance(c, dict) and isinstance(c.get("cell_type"), str)
                                        and isinstance(c.get("source"), (str, list)) for c in data["cells"]):
        return None
    return _as_nodes(_convert_text(data, _join))


def _upgraded(data: dict, path: Path) -> Node:
    import nbformat

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return nbformat.reads(json.dumps(data), as_version=4)
        except Exception as exc:  # nbformat's conversion errors have no common base
            raise NotebookFileError(f"{path}: not a readable notebook ({exc}).") from None


def _as_nodes(value):
    if isinstance(value, dict):
        return Node((key, _as_nodes(item)) for key, item in value.items())
    return [_as_nodes(item) for item in value] if isinstance(value, list) else value


def _kernel_language(nb) -> str | None:
    meta = nb.get("metadata", {})
    language = meta.get("kernelspec", {}).get("language") or meta.get("language_info", {}).get("name")
    return language.lower() if isinstance(language, str) else None


def _without_transient(nb: dict) -> dict:
    """What nbformat never stores (its ``strip_transient``): the original format, the signature, trust."""
    metadata = {k: v for k, v in nb.get("metadata", {}).items()
                if k not in ("orig_nbformat", "orig_nbformat_minor", "signature")}
    cells = [{**cell, "metadata": {k: v for k, v in cell["metadata"].items() if k != "trusted"}}
             if "trusted" in cell.get("metadata", {}) else cell for cell in nb["cells"]]
    return {**nb, "metadata": metadata, "cells": cells}


def _split(text):
    return text.splitlines(True) if isinstance(text, str) else text


def _join(text):
    return "".join(text) if isinstance(text, list) else text


def _convert_text(nb: dict, convert) -> dict:
    """A copy with nbformat's multiline fields converted; JSON mime data stays as it is."""
    cells = []
    for cell in nb.get("cells", []):
        cell = {**cell, "source": convert(cell.get("source", ""))}
        if "outputs" in cell:
            cell["outputs"] = [_convert_output(o, convert) for o in cell["outputs"]]
        cells.append(cell)
    return {**nb, "cells": cells}


def _convert_output(output: dict, convert) -> dict:
    output = dict(output)
    if "text" in output:
        output["text"] = convert(output["text"])
    if "data" in output:
        output["data"] = {k: v if k == "application/json" or k.endswith("+json") else convert(v)
                          for k, v in output["data"].items()}
    return output
