"""The static check: the allowlist of syntax, names, helpers and methods, walked once per expression.

What it refuses, validation reports on save (`static_problem`) and the evaluator never sees.
"""

from __future__ import annotations

import ast
import math

from .evaluator import EVALUATORS
from .helpers import HELPERS
from .limits import MAX_EXPRESSION_DEPTH, MAX_INT_BITS
from .methods import METHODS
from .operators import BINARY, COMPARE, UNARY
from .words import a_kind, quoted

_FORBIDDEN: dict[type[ast.AST], str] = {
    ast.Slice: "uses a slice inside a tuple (x[a:b, c])",
    ast.Lambda: "uses a lambda",
    ast.NamedExpr: "uses an assignment (:=)",
    ast.Starred: "uses * unpacking",
    ast.Await: "uses await",
    ast.Yield: "uses yield",
    ast.YieldFrom: "uses yield",
    ast.MatMult: "uses the @ operator",
}


class Problem(Exception):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code, self.detail = code, detail


def _forbid(detail: str) -> Problem:
    return Problem("expression_forbidden", detail)


def _is_private(name: str) -> bool:
    return name.startswith("_") and name != "_"


class Checker:
    """The allowlist, walked once per expression (the tree is at most MAX_EXPRESSION_DEPTH deep)."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names

    def check(self, node: ast.AST, scope: frozenset[str]) -> None:
        kind = type(node)
        if kind in _FORBIDDEN:
            raise _forbid(_FORBIDDEN[kind])
        if isinstance(node, ast.Name):
            self.name(node.id, scope)
        elif isinstance(node, ast.Constant):
            self.constant(node.value)
        elif isinstance(node, ast.Attribute):
            if _is_private(node.attr) or node.attr == "_":
                raise _forbid(f"uses a private name {quoted(node.attr)}")
            self.check(node.value, scope)
        elif isinstance(node, ast.Call):
            self.call(node, scope)
        elif isinstance(node, ast.ListComp | ast.GeneratorExp | ast.SetComp | ast.DictComp):
            self.comprehension(node, scope)
        elif isinstance(node, ast.Subscript):
            self.check(node.value, scope)
            parts = (
                (node.slice.lower, node.slice.upper, node.slice.step)
                if isinstance(node.slice, ast.Slice)
                else (node.slice,)
            )
            for part in parts:
                if part is not None:
                    self.check(part, scope)
            return
        elif isinstance(node, ast.Dict) and any(key is None for key in node.keys):
            raise _forbid("uses ** unpacking")
        elif isinstance(node, ast.FormattedValue) and (node.conversion not in (-1, ord("s")) or node.format_spec):
            raise _forbid("uses !r, !a or a format spec in an f-string (only {value} fields are supported)")
        elif kind not in EVALUATORS and kind not in _PARTS:
            raise _forbid(f"uses {kind.__name__}, which expressions cannot use")
        if not isinstance(
            node, ast.Call | ast.ListComp | ast.GeneratorExp | ast.SetComp | ast.DictComp | ast.Attribute
        ):
            for child in ast.iter_child_nodes(node):
                self.check(child, scope)

    def name(self, name: str, scope: frozenset[str]) -> None:
        if _is_private(name):
            raise _forbid(f"uses a private name {quoted(name)}")
        if name in scope or name in self.names:
            return
        if name in HELPERS:
            raise _forbid(f"uses the helper {name!r} without calling it, like {name}(x)")
        raise Problem("expression_unknown_name", f"uses the name {quoted(name)}, which is not defined: {self.hint()}")

    def hint(self) -> str:
        return f"use {', '.join(self.names)} or a helper"

    @staticmethod
    def constant(value: object) -> None:
        if isinstance(value, bool) or value is None or isinstance(value, str):
            return
        if isinstance(value, int):
            if value.bit_length() > MAX_INT_BITS:
                raise _forbid("uses a number that is too large")
            return
        if isinstance(value, float):
            if not math.isfinite(value):
                raise _forbid("uses a number that is too large")
            return
        raise _forbid(f"uses {a_kind(value)} literal, which expressions cannot use")

    def call(self, node: ast.Call, scope: frozenset[str]) -> None:
        func = node.func
        if isinstance(func, ast.Attribute):
            if _is_private(func.attr):
                raise _forbid(f"uses a private name {quoted(func.attr)}")
            if func.attr not in METHODS:
                raise _forbid(f"calls the method {quoted(func.attr)}, which is not available in expressions")
            if node.keywords:
                raise _forbid(f"passes a keyword to {func.attr}(): methods take plain values")
            self.check(func.value, scope)
        elif isinstance(func, ast.Name):
            if _is_private(func.id):
                raise _forbid(f"uses a private name {quoted(func.id)}")
            if func.id not in HELPERS:
                if func.id in scope or func.id in self.names:
                    raise _forbid(f"calls {func.id!r}, which is not a helper")
                detail = f"calls {quoted(func.id)}, which is not a helper: the helpers are {', '.join(HELPERS)}"
                raise Problem("expression_unknown_name", detail)
            _, fewest, most, keywords = HELPERS[func.id]
            for kw in node.keywords:
                if kw.arg is None:
                    raise _forbid("uses ** unpacking")
                if kw.arg not in keywords:
                    raise _forbid(f"passes {kw.arg}= to {func.id}(), which does not take it")
            if not fewest <= len(node.args) <= most:
                takes = (
                    str(fewest) if fewest == most else f"{fewest} to {most}" if most < 1_000 else f"{fewest} or more"
                )
                raise _forbid(f"calls {func.id}() with {len(node.args)} values (it takes {takes})")
        else:
            self.check(func, scope)  # names the lambda, if that is what is called
            raise _forbid("calls something that is not a helper or a method")
        for child in (*node.args, *(kw.value for kw in node.keywords)):
            self.check(child, scope)

    def comprehension(
        self, node: ast.ListComp | ast.GeneratorExp | ast.SetComp | ast.DictComp, scope: frozenset[str]
    ) -> None:
        for generator in node.generators:
            if generator.is_async:
                raise _forbid("uses an async comprehension")
            self.check(generator.iter, scope)
            scope = scope | self.targets(generator.target)
            for condition in generator.ifs:
                self.check(condition, scope)
        for part in (node.key, node.value) if isinstance(node, ast.DictComp) else (node.elt,):
            self.check(part, scope)

    def targets(self, target: ast.expr) -> frozenset[str]:
        if isinstance(target, ast.Name):
            if _is_private(target.id):
                raise _forbid(f"uses a private name {quoted(target.id)}")
            return frozenset({target.id})
        if isinstance(target, ast.Tuple | ast.List):
            return frozenset().union(*(self.targets(part) for part in target.elts))
        raise _forbid("loops into something that is not a name (use `for x in ...` or `for k, v in ...`)")


# Nodes that only appear inside the ones above (operators, contexts, slices).
_PARTS: frozenset[type[ast.AST]] = frozenset(
    {ast.Expression, ast.Load, ast.Store, ast.comprehension, ast.keyword, ast.And, ast.Or}
    | set(BINARY)
    | set(UNARY)
    | set(COMPARE)
)


def private_problem(tree: ast.AST) -> tuple[str, str] | None:
    """The first private name in the text (`().__class__.__bases__` names `__class__`), if any."""
    found: list[tuple[int, int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and _is_private(node.id):
            found.append((node.end_lineno or 0, node.end_col_offset or 0, node.id))
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            found.append((node.end_lineno or 0, node.end_col_offset or 0, node.attr))
    return ("expression_forbidden", f"uses a private name {quoted(min(found)[2])}") if found else None


def depth_problem(tree: ast.AST) -> tuple[str, str] | None:
    stack: list[tuple[ast.AST, int]] = [(tree, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_EXPRESSION_DEPTH:
            return "expression_too_deep", f"nests deeper than {MAX_EXPRESSION_DEPTH} levels"
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(item))
    return None
