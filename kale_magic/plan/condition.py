"""``%%step NAME --if "EXPR"``: the restricted expression a step's running depends on.

The expression is checked on its AST, once, when the cell is recorded (and when a
notebook is read without a kernel): names, literals, comparisons, boolean and
arithmetic operators, subscripts, attributes and the calls ``len abs min max any
all round``.  Nothing else — no other call, lambda, comprehension or private
attribute — so the kernel, the local engine and a Kubeflow gate can all evaluate
it on values alone, and it means the same in each.
"""

from __future__ import annotations

import ast
import builtins
from dataclasses import dataclass

CALLS = ("len", "abs", "min", "max", "any", "all", "round")
_SHOWN = 60  # characters of a value's repr in a skip reason

_NODES = (
    ast.Expression, ast.Name, ast.Load, ast.Constant, ast.Compare, ast.BoolOp, ast.UnaryOp, ast.BinOp,
    ast.Subscript, ast.Slice, ast.Attribute, ast.Tuple, ast.List, ast.Call,
    ast.And, ast.Or, ast.Not, ast.USub, ast.UAdd,
    ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow,
    ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.In, ast.NotIn, ast.Is, ast.IsNot,
)


@dataclass(frozen=True)
class Condition:
    """A checked ``--if`` expression and the names it reads, in the order it reads them."""

    text: str
    names: tuple[str, ...]

    def holds(self, values: dict) -> bool:
        """Its truth over ``values`` (name -> value); the expression's own errors propagate."""
        allowed = {name: getattr(builtins, name) for name in CALLS}
        code = compile(ast.parse(self.text, mode="eval"), "<--if>", "eval")
        return bool(eval(code, {"__builtins__": allowed}, {n: values[n] for n in self.names}))

    def why_false(self, values: dict) -> str:
        """The one line a skipped step shows: the condition and the values it read."""
        shown = ", ".join(f"{name} = {_short(values[name])}" for name in self.names)
        return f"condition {self.text} was false" + (f": {shown}" if shown else "")


def parse_condition(text: str) -> Condition:
    """The :class:`Condition` of ``text``; ValueError (a sentence without the step) says what is wrong."""
    text = text.strip()
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"it is not a Python expression ({exc.msg}); quote it whole, e.g. "
                         '--if "accuracy > threshold"') from None
    names: list[str] = []
    for node in ast.walk(tree):
        if not isinstance(node, _NODES):
            raise ValueError(f"{_kind(node)} is not allowed; use names, literals, comparisons, and/or/not, "
                             f"arithmetic, subscripts, attributes and the calls {', '.join(CALLS)}")
        if isinstance(node, ast.Call):
            called = ast.unparse(node.func)
            if not (isinstance(node.func, ast.Name) and called in CALLS):
                raise ValueError(f"it calls {called}(), but a condition may call only {', '.join(CALLS)}; "
                                 "compute the value in a step before and test that")
            if node.keywords:
                raise ValueError(f"it passes {called}() a keyword argument; pass its arguments by position")
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            raise ValueError(f"it reads the private attribute .{node.attr}; test a public value instead")
    calls = {id(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and id(node) not in calls and node.id not in names:
            names.append(node.id)
    return Condition(text, tuple(sorted(names, key=_position(tree))))


def _position(tree: ast.AST):
    """Names in the order the expression reads them (``ast.walk`` is breadth-first)."""
    first = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            spot = (node.lineno, node.col_offset)
            first[node.id] = min(first.get(node.id, spot), spot)
    return first.__getitem__


def _kind(node: ast.AST) -> str:
    kinds = {ast.Lambda: "a lambda", ast.NamedExpr: "an assignment (:=)", ast.IfExp: "an if-else expression",
             ast.Await: "await", ast.Starred: "unpacking (*)", ast.JoinedStr: "an f-string"}
    for kind, said in kinds.items():
        if isinstance(node, kind):
            return said
    if isinstance(node, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
        return "a comprehension"
    return f"{type(node).__name__} syntax"


def _short(value) -> str:
    if hasattr(value, "item") and callable(value.item) and getattr(value, "shape", None) == ():
        value = value.item()  # a numpy scalar shows as 0.87, not np.float64(0.87)
    text = repr(value)
    return text if len(text) <= _SHOWN else text[:_SHOWN - 1] + "…"
