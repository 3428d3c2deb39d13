"""Names each cell reads and writes, found in the AST of IPython's transformed source.

Pure functions over source text: no IPython objects and no live values here
(``planner.py`` brings the live namespace in).  The analysis follows execution
order inside a cell, so ``x = x + 1`` reads ``x`` while ``x = 1; print(x)``
does not; reads inside function bodies are resolved when the cell ends, since a
function runs after it is defined.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

# Methods that change their receiver in place.  Calling one counts as a write of
# the name it is called on, so the changed value flows to later steps.
MUTATING_METHODS = frozenset({
    "append", "extend", "insert", "remove", "pop", "popitem", "clear", "sort", "reverse",
    "update", "setdefault", "add", "discard", "difference_update", "intersection_update",
    "symmetric_difference_update", "appendleft", "extendleft", "popleft", "rotate",
    "fill", "resize", "itemset", "put", "setflags", "partial_fit", "fit", "fit_transform",
    "fit_predict", "set_params", "load_state_dict", "train", "eval", "zero_grad", "step",
    "backward", "set_index", "reset_index", "rename", "drop", "dropna", "fillna",
    "replace", "sort_values", "sort_index", "__setitem__", "__delitem__", "shuffle",
})
# Functions and methods that change their first argument in place.
ARGUMENT_MUTATORS = frozenset({"shuffle", "copyto", "fill_diagonal", "place", "putmask"})
# Pandas-style methods change the receiver only with ``inplace=True``.
# Magics whose argument is Python code that runs in the user namespace.
CODE_MAGICS = frozenset({"time", "timeit", "prun", "capture", "debug"})
INPLACE_ONLY = frozenset({
    "set_index", "reset_index", "rename", "drop", "dropna", "fillna", "replace",
    "sort_values", "sort_index",
})


@dataclass
class Names:
    """What a piece of code does with global names, in first-seen order."""

    reads: list[str] = field(default_factory=list)  # read before being bound here
    writes: set[str] = field(default_factory=set)  # bound (assigned, imported, defined, deleted)
    mutates: set[str] = field(default_factory=set)  # changed in place
    functions: dict[str, set[str]] = field(default_factory=dict)  # def name -> globals it reads
    deferred: set[str] = field(default_factory=set)  # reads that happen only inside function bodies
    star_import: bool = False

    @property
    def changed(self) -> set[str]:
        return self.writes | self.mutates


def base_name(node: ast.AST) -> str | None:
    """``df`` for ``df.a.b[0]``: the global an attribute/subscript chain hangs off.

    None through a call: in ``Model().fit(X)`` the changed object is the new instance, not ``Model``.
    """
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Starred)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _bound_inside(node: ast.AST) -> set[str]:
    """Names local to a nested scope (parameters, assignments, defs, imports, targets)."""
    bound = set()
    for child in ast.walk(node):
        if isinstance(child, ast.Name) and isinstance(child.ctx, (ast.Store, ast.Del)):
            bound.add(child.id)
        elif isinstance(child, ast.arg):
            bound.add(child.arg)
        elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and child is not node:
            bound.add(child.name)
        elif isinstance(child, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in child.names)
        elif isinstance(child, ast.ExceptHandler) and child.name:
            bound.add(child.name)
    declared_global = {n for c in ast.walk(node) if isinstance(c, ast.Global) for n in c.names}
    return bound - declared_global


def scope_globals(node: ast.AST) -> tuple[set[str], set[str]]:
    """(globals read, globals assigned through ``global``) by a function, lambda, class or comprehension."""
    local = _bound_inside(node)
    reads = {c.id for c in ast.walk(node) if isinstance(c, ast.Name) and isinstance(c.ctx, ast.Load)}
    declared_global = {n for c in ast.walk(node) if isinstance(c, ast.Global) for n in c.names}
    return reads - local, declared_global


class _Flow(ast.NodeVisitor):
    """Walks module-level statements in execution order, tracking what is bound so far."""

    def __init__(self, names: Names, bound: set[str]):
        self.names = names
        self.bound = bound
        self.deferred: set[str] = set()  # reads inside function bodies, resolved at the end

    # bookkeeping -----------------------------------------------------------
    def read(self, name: str) -> None:
        if name not in self.bound and name not in self.names.reads:
            self.names.reads.append(name)

    def write(self, name: str) -> None:
        self.bound.add(name)
        self.names.writes.add(name)

    def mutate(self, node: ast.AST) -> None:
        name = base_name(node)
        if name:
            self.read(name)
            self.names.mutates.add(name)

    # names and assignments -------------------------------------------------------
    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            self.read(node.id)
        else:
            self.write(node.id)

    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit(node.value)
        for target in node.targets:
            self.visit(target)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)
            self.visit(node.target)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self.visit(node.value)
        if isinstance(node.target, ast.Name):
            self.read(node.target.id)
            self.write(node.target.id)
        else:
            self.generic_visit_store(node.target)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.visit(node.value)
        self.write(node.target.id)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        if isinstance(node.ctx, (ast.Store, ast.Del)):
            self.generic_visit_store(node)
        else:
            self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if isinstance(node.ctx, (ast.Store, ast.Del)):
            self.generic_visit_store(node)
        else:
            self.generic_visit(node)

    def generic_visit_store(self, node: ast.AST) -> None:
        """``d[k] = v`` / ``obj.attr = v`` / ``del d[k]``: the container changes in place."""
        self.mutate(node)
        if isinstance(node, ast.Subscript):
            self.visit(node.slice)
        inner = node.value
        if not isinstance(inner, ast.Name):
            self.visit(inner)

    def visit_Call(self, node: ast.Call) -> None:
        self.generic_visit(node)
        self._magic_code(node)
        func = node.func
        method = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        inplace = any(k.arg == "inplace" and getattr(k.value, "value", False) is True for k in node.keywords)
        if isinstance(func, ast.Attribute):
            trailing_underscore = method.endswith("_") and not method.startswith("__")
            if (method in MUTATING_METHODS and method not in INPLACE_ONLY) or trailing_underscore or inplace:
                self.mutate(func.value)
        if method in ARGUMENT_MUTATORS and node.args:
            self.mutate(node.args[0])

    def _magic_code(self, node: ast.Call) -> None:
        """``%time y = f(x)`` is a string passed to ``get_ipython().run_line_magic``: analyze it too."""
        func = node.func
        if not (isinstance(func, ast.Attribute) and func.attr in ("run_line_magic", "run_cell_magic")
                and isinstance(func.value, ast.Call) and getattr(func.value.func, "id", "") == "get_ipython"):
            return
        args = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
        if len(args) < 2 or args[0] not in CODE_MAGICS:
            return
        try:
            body = ast.parse(args[-1]).body
        except SyntaxError:
            return
        for stmt in body:
            self.visit(stmt)

    # bindings by statements ----------------------------------------------------
    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.write(alias.asname or alias.name.split(".")[0])

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        for alias in node.names:
            if alias.name == "*":
                self.names.star_import = True
            else:
                self.write(alias.asname or alias.name)

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.type is not None:
            self.visit(node.type)
        if node.name:
            self.write(node.name)
        for stmt in node.body:
            self.visit(stmt)

    def visit_MatchAs(self, node) -> None:
        self.generic_visit(node)
        if node.name:
            self.write(node.name)

    def visit_MatchStar(self, node) -> None:
        if node.name:
            self.write(node.name)

    def visit_MatchMapping(self, node) -> None:
        self.generic_visit(node)
        if node.rest:
            self.write(node.rest)

    def visit_Global(self, node: ast.Global) -> None:
        pass

    visit_Nonlocal = visit_Global

    # nested scopes -------------------------------------------------------------
    def _function(self, node) -> None:
        for decorator in node.decorator_list:
            self.visit(decorator)
        for default in node.args.defaults + [d for d in node.args.kw_defaults if d is not None]:
            self.visit(default)
        reads, global_writes = scope_globals(node)
        reads.discard(node.name)  # recursion
        self.names.functions[node.name] = reads
        self.deferred |= reads
        self.names.writes |= global_writes
        self.write(node.name)

    visit_FunctionDef = visit_AsyncFunctionDef = _function

    def visit_Lambda(self, node: ast.Lambda) -> None:
        for default in node.args.defaults + [d for d in node.args.kw_defaults if d is not None]:
            self.visit(default)
        self.deferred |= scope_globals(node)[0]

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for expr in node.decorator_list + node.bases + [k.value for k in node.keywords]:
            self.visit(expr)
        reads, global_writes = scope_globals(ast.Module(body=node.body, type_ignores=[]))
        reads.discard(node.name)
        self.names.functions[node.name] = reads
        self.deferred |= reads
        self.names.writes |= global_writes
        self.write(node.name)

    def _comprehension(self, node) -> None:
        self.visit(node.generators[0].iter)  # evaluated in the enclosing scope
        for name in sorted(scope_globals(node)[0]):
            self.read(name)

    visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = _comprehension


def parse(source: str, where: str) -> ast.Module:
    """Parse transformed cell source; a syntax error names the cell."""
    from ..errors import ValidationError

    try:
        return ast.parse(source)
    except SyntaxError as exc:
        raise ValidationError(f"{where} has a syntax error on line {exc.lineno}: {exc.msg}; fix it and re-run the cell.") from None


def analyze(sources: list[str], where: str = "the cell", bound: set[str] | None = None) -> Names:
    """Names read, written and mutated by cells that run one after another (one step's cells)."""
    names = Names()
    flow = _Flow(names, set(bound or ()))
    for source in sources:
        for stmt in parse(source, where).body:
            flow.visit(stmt)
    for name in sorted(flow.deferred):
        if name not in flow.bound and name not in names.reads:
            names.deferred.add(name)
            flow.read(name)
    return names


def function_closure(names: list[str], functions: dict[str, set[str]]) -> set[str]:
    """Globals read, transitively, by calling the named functions (defined in %%functions)."""
    seen: set[str] = set()
    out: set[str] = set()
    todo = [n for n in names if n in functions]
    while todo:
        fn = todo.pop()
        if fn in seen:
            continue
        seen.add(fn)
        for name in functions[fn]:
            out.add(name)
            if name in functions:
                todo.append(name)
    return out


def literal_parameters(source: str, where: str = "the %%parameters cell") -> dict[str, object]:
    """``name = <literal>`` lines of a parameters cell; anything else is a validation error."""
    from ..errors import ValidationError

    params: dict[str, object] = {}
    for stmt in parse(source, where).body:
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str):
            continue  # a docstring-like comment
        if not (isinstance(stmt, (ast.Assign, ast.AnnAssign)) and _single_name(stmt)):
            raise ValidationError(
                f"{where}, line {stmt.lineno}: only 'name = value' assignments are allowed in parameters; "
                "move other code into a step.")
        target = _single_name(stmt)
        try:
            params[target] = ast.literal_eval(stmt.value)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            raise ValidationError(
                f"{where}, line {stmt.lineno}: parameter '{target}' must be a literal "
                f"(number, string, bool, None, list, dict, tuple), not '{ast.unparse(stmt.value)}'; "
                "compute derived values in a step.") from None
    return params


def _single_name(stmt) -> str | None:
    targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
    if len(targets) == 1 and isinstance(targets[0], ast.Name) and stmt.value is not None:
        return targets[0].id
    return None


def metric_names(source: str, where: str = "the %%metrics cell", *, prints_only: bool = False) -> list[str]:
    """One metric per line: a variable name, or Kale's ``print(name)`` (the only form when ``prints_only``)."""
    from ..errors import ValidationError

    out = []
    for stmt in parse(source, where).body:
        value = stmt.value if isinstance(stmt, ast.Expr) else None
        printed = (isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "print"
                   and len(value.args) == 1 and not value.keywords)
        if printed:
            value = value.args[0]
        if prints_only and not (printed and isinstance(value, ast.Name)):
            raise ValidationError(f"{where} line {stmt.lineno} is not print(variable); Kale metrics cells may "
                                  "only print variables.")
        if not isinstance(value, ast.Name):
            raise ValidationError(
                f"{where}, line {stmt.lineno}: each line must name one variable to log as a metric "
                f"(found '{ast.unparse(stmt)}'); compute the value in a step and name it here.")
        if value.id not in out:
            out.append(value.id)
    return out
