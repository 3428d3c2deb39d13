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
# What hands out a container's own items (not copies of them): a name bound from these, or a loop
# variable over them, is an alias, and changing it in place changes the container.
ITEM_METHODS = frozenset({"values", "items", "keys", "get", "copy", "__getitem__"})
ITEM_BUILTINS = frozenset({"enumerate", "reversed", "sorted", "list", "tuple", "iter", "zip", "filter", "set"})


@dataclass
class Names:
    """What a piece of code does with global names, in first-seen order."""

    reads: list[str] = field(default_factory=list)  # read before being bound here
    writes: set[str] = field(default_factory=set)  # bound (assigned, imported, defined, deleted)
    mutates: set[str] = field(default_factory=set)  # changed in place
    functions: dict[str, set[str]] = field(default_factory=dict)  # def name -> globals it reads
    deferred: set[str] = field(default_factory=set)  # reads that happen only inside function bodies
    star_import: bool = False
    # name changed in place -> the code it came from, where that may hold items of a global container the
    # analysis cannot name (``for m in pick(models): m.fit(X)``)
    unsure: dict[str, str] = field(default_factory=dict)

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
        self.aliases: dict[str, set[str]] = {}  # name -> the containers whose item it is
        self.unknown: dict[str, str] = {}  # name -> code of an item of something the analysis cannot follow

    # bookkeeping -----------------------------------------------------------
    def read(self, name: str) -> None:
        if name not in self.bound and name not in self.names.reads:
            self.names.reads.append(name)

    def write(self, name: str) -> None:
        self.bound.add(name)
        self.names.writes.add(name)
        self.aliases.pop(name, None)  # rebound: no longer an item of what it came from
        self.unknown.pop(name, None)

    def mutate(self, node: ast.AST) -> None:
        name = base_name(node)
        if name:
            self.read(name)
            self.names.mutates.add(name)
            for container in sorted(self.aliases.get(name, ())):  # m.fit(X) changes models too
                self.read(container)
                self.names.mutates.add(container)
            if name in self.unknown:
                self.names.unsure.setdefault(name, self.unknown[name])

    def alias(self, targets: list[ast.AST], source: ast.AST, *, items: bool) -> None:
        """Bind ``targets`` as items of what ``source`` (its items, with ``items``) holds."""
        containers = _containers(source, items)
        for target in targets:
            for node in ast.walk(target):
                if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                    if containers:
                        self.aliases[node.id] = containers
                    elif containers is None:
                        self.unknown[node.id] = ast.unparse(source)

    def visit_For(self, node: ast.For) -> None:
        self.visit(node.iter)
        self.visit(node.target)
        self.alias([node.target], node.iter, items=True)
        for stmt in node.body + node.orelse:
            self.visit(stmt)

    visit_AsyncFor = visit_For

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
        unpacking = [t for t in node.targets if isinstance(t, (ast.Tuple, ast.List))]
        if unpacking:  # a, b = models.values()
            self.alias(unpacking, node.value, items=True)
        if isinstance(node.value, (ast.Subscript, ast.Attribute)) or _item_call(node.value):
            self.alias([t for t in node.targets if isinstance(t, ast.Name)], node.value, items=False)

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
        if isinstance(func, ast.Attribute) and _mutating(node):
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
        # [m.fit(X, y) for m in models.values()]: the items it changes are the container's
        items = {}
        for generator in node.generators:
            containers = _containers(generator.iter, True)
            for target in ast.walk(generator.target):
                if isinstance(target, ast.Name):
                    items[target.id] = containers
        for call in ast.walk(node):
            if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and _mutating(call):
                name = base_name(call.func.value)
                if name in items and items[name]:
                    for container in sorted(items[name]):
                        self.read(container)
                        self.names.mutates.add(container)
                elif name in items:
                    self.names.unsure.setdefault(name, ast.unparse(node))

    visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = _comprehension


def _mutating(call: ast.Call) -> bool:
    """Whether a method call changes its receiver in place (``fit``, ``append``, ``add_``, ``inplace=True``)."""
    method = call.func.attr
    inplace = any(k.arg == "inplace" and getattr(k.value, "value", False) is True for k in call.keywords)
    trailing_underscore = method.endswith("_") and not method.startswith("__")
    return (method in MUTATING_METHODS and method not in INPLACE_ONLY) or trailing_underscore or inplace


def _item_call(node: ast.AST) -> bool:
    """``models.get("svm")``: a call that hands out one of a container's items."""
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("get", "__getitem__", "pop", "setdefault"))


def _containers(node: ast.AST, items: bool) -> set[str] | None:
    """The globals whose items ``node`` holds (its items, with ``items``): ``{'models'}`` for
    ``models.values()``, ``models['svm']``, ``enumerate(zip(names, models))``; empty when it holds no
    container's items (``range(n)``, a literal); None when a call the analysis cannot follow takes a name."""
    if isinstance(node, ast.Name):
        return {node.id} if items else set()
    if isinstance(node, (ast.Attribute, ast.Subscript, ast.Starred)):
        return _containers(node.value, True)
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        found: set[str] = set()
        for element in node.elts:
            inner = _containers(element, not items)
            if inner is None:
                return None
            found |= inner
        return found
    if isinstance(node, ast.Call):
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in ITEM_METHODS | {"pop", "setdefault"}:
            return _containers(func.value, True)
        if isinstance(func, ast.Name) and func.id in ITEM_BUILTINS:
            found = set()
            for arg in node.args[1:] if func.id == "filter" else node.args:
                inner = _containers(arg, True)
                if inner is None:
                    return None
                found |= inner
            return found
        if isinstance(func, ast.Name) and func.id in ("range", "len", "int", "float", "str", "bool"):
            return set()
        takes = [n for arg in [*node.args, *(k.value for k in node.keywords)] for n in ast.walk(arg)
                 if isinstance(n, ast.Name)]
        receiver = base_name(func.value) if isinstance(func, ast.Attribute) else None
        return None if takes or receiver else set()
    return set()


def argument_names(source: str) -> list[str]:
    """Names ``source`` passes to what it calls or iterates (not the callees): ``['models']`` for
    ``pick(models, k)``'s first candidate container."""
    tree = ast.parse(source)
    callees = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    return list(dict.fromkeys(n.id for n in ast.walk(tree) if isinstance(n, ast.Name)
                              and isinstance(n.ctx, ast.Load) and id(n) not in callees))


def module_names(sources) -> list[str]:
    """The modules the import statements of ``sources`` name, in order, inner ones included.

    ``from a import b`` names ``a`` and, as a guess, ``a.b`` (often a submodule; whoever
    imports the list skips names that are not modules).  Relative imports are left out.
    """
    out: dict[str, None] = {}
    for source in sources:
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                out.update(dict.fromkeys(alias.name for alias in node.names))
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                out[node.module] = None
                out.update(dict.fromkeys(f"{node.module}.{a.name}" for a in node.names if a.name != "*"))
    return list(out)


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
    """``name = <literal>`` lines of a parameters cell; every other line is a validation problem."""
    from ..errors import ValidationError

    params: dict[str, object] = {}
    problems = []
    for stmt in parse(source, where).body:
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str):
            continue  # a docstring-like comment
        if not (isinstance(stmt, (ast.Assign, ast.AnnAssign)) and _single_name(stmt)):
            problems.append(f"{where}, line {stmt.lineno}: only 'name = value' assignments are allowed in "
                            "parameters; move other code into a step.")
            continue
        target = _single_name(stmt)
        try:
            params[target] = ast.literal_eval(stmt.value)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            problems.append(f"{where}, line {stmt.lineno}: parameter '{target}' must be a literal "
                            f"(number, string, bool, None, list, dict, tuple), not '{ast.unparse(stmt.value)}'; "
                            "compute derived values in a step.")
    if problems:
        raise ValidationError(*problems)
    return params


def _single_name(stmt) -> str | None:
    targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
    if len(targets) == 1 and isinstance(targets[0], ast.Name) and stmt.value is not None:
        return targets[0].id
    return None


def metric_names(source: str, where: str = "the %%metrics cell", *, prints_only: bool = False) -> list[str]:
    """One metric per line: a variable name, or Kale's ``print(name)`` (the only form when ``prints_only``)."""
    from ..errors import ValidationError

    out, problems = [], []
    for stmt in parse(source, where).body:
        value = stmt.value if isinstance(stmt, ast.Expr) else None
        printed = (isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "print"
                   and len(value.args) == 1 and not value.keywords)
        if printed:
            value = value.args[0]
        if prints_only and not (printed and isinstance(value, ast.Name)):
            problems.append(f"{where} line {stmt.lineno} is not print(variable); Kale metrics cells may "
                            "only print variables.")
        elif not isinstance(value, ast.Name):
            problems.append(
                f"{where}, line {stmt.lineno}: each line must name one variable to log as a metric "
                f"(found '{ast.unparse(stmt)}'); compute the value in a step and name it here.")
        elif value.id not in out:
            out.append(value.id)
    if problems:
        raise ValidationError(*problems)
    return out
