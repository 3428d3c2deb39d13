"""The package's import graph runs one way (docs/development.md, Layers): each folder imports only from the
folders below it. Checked on the source: every import of a kale_magic module, outside ``TYPE_CHECKING`` blocks."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "kale_magic"
# top to bottom, as docs/development.md draws them; a folder may import its own layer and any below it
LAYERS = [
    {"cli"}, {"source"}, {"extension"}, {"panel", "server"}, {"run"}, {"engines"}, {"cache"},
    {"history", "snapshot"}, {"step"}, {"plan"}, {"marshal"},
    {"ipynb", "layout", "files", "errors", "text", "plugins", "version", "items", "cron", "images", "skips"},
]
SHIMS = {"__init__", "runtime", "kfp_step"}  # old import paths and the extension's entry: they only point down
RANK = {room: i for i, rooms in enumerate(LAYERS) for room in rooms}


def room_of(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def imports(path: Path, module: str):
    """(line, imported kale_magic module) for every import outside ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for child in node.body for n in ast.walk(child))
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [f"{target}.{a.name}" for a in node.names] if target in ("kale_magic",) else [target]
            for name in names:
                if name.startswith("kale_magic"):
                    yield node.lineno, name
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("kale_magic"):
                    yield node.lineno, alias.name


def test_every_import_runs_down_the_layers():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(("kale_magic",) + path.relative_to(PACKAGE).with_suffix("").parts)
        room = room_of(module)
        if room in SHIMS or module == "kale_magic":
            continue
        assert room in RANK, f"{path} is in no layer: add it to docs/development.md and LAYERS here"
        for line, target in imports(path, module):
            other = room_of(target)
            if other in RANK and RANK[other] < RANK[room]:
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({room}) imports {target} ({other})")
    assert upward == []


def test_the_check_sees_an_upward_import(tmp_path):
    path = tmp_path / "store.py"
    path.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..run.state import RunState\n"
                    "def f():\n    from .. import engines\n    from ..engines.registry import EngineType\n")
    found = list(imports(path, "kale_magic.history.store"))
    assert found == [(5, "kale_magic.engines"), (6, "kale_magic.engines.registry")]
    assert [RANK[room_of(t)] < RANK["history"] for _, t in found] == [True, True]
