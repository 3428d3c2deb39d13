"""What the README's opening promises a new user: install commands whose extras exist and bring what
interactive use needs."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parents[1]


def opening() -> str:
    """The first page: the introduction and the Quickstart section."""
    return "\n## ".join((ROOT / "README.md").read_text().split("\n## ", 2)[:2])


def extras() -> dict[str, list[str]]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["optional-dependencies"]


def requirement_names(extra: str, known: dict[str, list[str]]) -> set[str]:
    """The distributions an extra installs, following kale-magic[...] references."""
    names = set()
    for requirement in known[extra]:
        nested = re.fullmatch(r"kale-magic\[([\w,-]+)\]", requirement)
        if nested:
            names |= {n for e in nested.group(1).split(",") for n in requirement_names(e, known)}
        else:
            names.add(re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower())
    return names


def test_every_extra_the_opening_installs_exists():
    named = {e for group in re.findall(r"-e '\.\[([\w,-]+)\]'", opening()) for e in group.split(",")}
    assert named and named <= extras().keys(), named - extras().keys()


def test_the_opening_names_the_extra_for_interactive_use():
    text = opening()
    interactive = [e for group in re.findall(r"-e '\.\[([\w,-]+)\]' && \S*jupyter lab", text) for e in group.split(",")]
    installed = {n for e in interactive for n in requirement_names(e, extras())}
    assert {"jupyterlab", "ipywidgets", "matplotlib"} <= installed, installed
    assert "JupyterLab" in text and "matplotlib" in text


def test_run_notebook_is_documented_as_the_path_it_returns():
    row = next(line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("| `run.notebook(step)`"))
    assert "the path of the executed step notebook" in row


def test_the_test_extra_installs_every_library_a_test_would_skip_without():
    """The README's test command skips nothing for want of a library: each ``importorskip`` is installed."""
    named = set()
    for path in (ROOT / "tests").rglob("*.py"):
        named |= set(re.findall(r"importorskip\(\"([\w.]+)\"", path.read_text()))
    missing = sorted(m for m in named - {"tomllib"} if importlib.util.find_spec(m.split(".")[0]) is None)
    assert not missing, f"pip install -e '.[test]' does not install {missing}"
    assert {"xgboost-cpu", "lightgbm"} <= requirement_names("test", extras())
