"""The walk: each node of a checked syntax tree evaluated under the run's budgets (never Python's `eval`)."""

from __future__ import annotations

import ast
from collections.abc import Callable
from typing import Any

from .budget import HashedBuilder, Run
from .helpers import HELPERS, text_of
from .limits import MAX_DEEP, MAX_SIZE, ExpressionError, too_large
from .methods import FIELDS, METHODS, call_method
from .operators import BINARY, COMPARE, UNARY, binary_precheck, compare_error
from .words import CONTAINERS, SEQUENCES, a_kind, kind, none_hint

Scope = dict[str, Any]


def evaluate_node(run: Run, node: ast.AST, scope: Scope) -> Any:
    run.tick()
    return EVALUATORS[type(node)](run, node, scope)


def _ev_constant(run: Run, node: ast.Constant, scope: Scope) -> Any:
    return node.value


def _ev_name(run: Run, node: ast.Name, scope: Scope) -> Any:
    if node.id in scope:
        return scope[node.id]
    if node.id == "now":
        return run.now
    if node.id in run.variables:
        return run.variables[node.id]
    raise ExpressionError(f"name {node.id!r} is not defined")  # static_problem refuses this first


def _ev_boolop(run: Run, node: ast.BoolOp, scope: Scope) -> Any:
    value: Any = None
    for operand in node.values:
        value = evaluate_node(run, operand, scope)
        if bool(value) == isinstance(node.op, ast.Or):
            return value
    return value


def _ev_binop(run: Run, node: ast.BinOp, scope: Scope) -> Any:
    a, b = evaluate_node(run, node.left, scope), evaluate_node(run, node.right, scope)
    symbol, function = BINARY[type(node.op)]
    binary_precheck(run, symbol, a, b)
    try:
        return run.result(function(a, b))
    except TypeError:
        raise ExpressionError(f"'{symbol}' not supported between {kind(a)} and {kind(b)}{none_hint(a, b)}") from None


def _ev_unaryop(run: Run, node: ast.UnaryOp, scope: Scope) -> Any:
    value = evaluate_node(run, node.operand, scope)
    try:
        return run.result(UNARY[type(node.op)](value))
    except TypeError:
        symbol = {ast.USub: "-", ast.UAdd: "+", ast.Invert: "~"}.get(type(node.op), "not")
        raise ExpressionError(f"'{symbol}' not supported for {kind(value)}{none_hint(value)}") from None


def _ev_compare(run: Run, node: ast.Compare, scope: Scope) -> Any:
    left = evaluate_node(run, node.left, scope)
    for op, right_node in zip(node.ops, node.comparators, strict=True):
        right = evaluate_node(run, right_node, scope)
        symbol, function = COMPARE[type(op)]
        if isinstance(right, CONTAINERS) and symbol in ("in", "not in"):
            run.tick(len(right))
        try:
            if not function(left, right):
                return False
        except TypeError:
            raise compare_error(symbol, left, right) from None
        left = right
    return True


def _ev_ifexp(run: Run, node: ast.IfExp, scope: Scope) -> Any:
    return evaluate_node(run, node.body if evaluate_node(run, node.test, scope) else node.orelse, scope)


def _read(value: object, key: object) -> Any:
    """`value[key]` / `value.key` for reading data: dict keys, list/str indexes; missing gives None."""
    if value is None:
        return None
    if isinstance(value, dict):
        try:
            return value.get(key)
        except TypeError:
            raise ExpressionError(f"{a_kind(key)} cannot be a dict key") from None
    if isinstance(value, SEQUENCES):
        if isinstance(key, int):
            return value[key] if -len(value) <= key < len(value) else None
        raise ExpressionError(f"{a_kind(value)} is indexed by whole numbers, not {kind(key)}{none_hint(key)}")
    raise ExpressionError(f"{a_kind(value)} value cannot be indexed")


def _ev_attribute(run: Run, node: ast.Attribute, scope: Scope) -> Any:
    value = evaluate_node(run, node.value, scope)
    if value is None or isinstance(value, dict):
        return _read(value, node.attr)
    fields = FIELDS.get(type(value))
    if fields is not None and node.attr in fields:
        return getattr(value, node.attr)  # a fixed allowlist of datetime/timedelta fields
    if node.attr in METHODS:
        raise ExpressionError(f"{node.attr} is a method of {kind(value)}: call it, like x.{node.attr}()")
    raise ExpressionError(f"{a_kind(value)} value has no field {node.attr!r} (fields are keys of dicts)")


def _ev_subscript(run: Run, node: ast.Subscript, scope: Scope) -> Any:
    value = evaluate_node(run, node.value, scope)
    if isinstance(node.slice, ast.Slice):
        bounds = [
            None if part is None else evaluate_node(run, part, scope)
            for part in (node.slice.lower, node.slice.upper, node.slice.step)
        ]
        if not isinstance(value, SEQUENCES):
            raise ExpressionError(f"only text, lists and tuples can be sliced, not {kind(value)}{none_hint(value)}")
        if not all(b is None or isinstance(b, int) for b in bounds):
            raise ExpressionError("slice bounds must be whole numbers")
        try:
            return run.result(value[slice(*bounds)])
        except ValueError:
            raise ExpressionError("a slice step cannot be zero") from None
    return _read(value, evaluate_node(run, node.slice, scope))


def _ev_call(run: Run, node: ast.Call, scope: Scope) -> Any:
    if isinstance(node.func, ast.Attribute):
        target = evaluate_node(run, node.func.value, scope)
        args = tuple(evaluate_node(run, arg, scope) for arg in node.args)
        value = call_method(run, target, node.func.attr, args)
        return value if isinstance(target, dict) and node.func.attr == "get" else run.result(value)
    assert isinstance(node.func, ast.Name)  # static_problem allows nothing else
    function = HELPERS[node.func.id][0]
    args = tuple(evaluate_node(run, arg, scope) for arg in node.args)
    kwargs = {kw.arg: evaluate_node(run, kw.value, scope) for kw in node.keywords if kw.arg is not None}
    value = function(run, *args, **kwargs)
    return value if node.func.id in ("min", "max") else run.result(value)


def _ev_list(run: Run, node: ast.List, scope: Scope) -> Any:
    return run.result([evaluate_node(run, element, scope) for element in node.elts])


def _ev_tuple(run: Run, node: ast.Tuple, scope: Scope) -> Any:
    return run.result(tuple(evaluate_node(run, element, scope) for element in node.elts))


def _ev_set(run: Run, node: ast.Set, scope: Scope) -> Any:
    out: set[Any] = set()
    builder = HashedBuilder(run, "set item")
    for element in node.elts:
        value = evaluate_node(run, element, scope)
        builder.admit(out, value)
        out.add(value)
    return run.result(out)


def _ev_dict(run: Run, node: ast.Dict, scope: Scope) -> Any:
    out: dict[Any, Any] = {}
    builder = HashedBuilder(run, "dict key")
    for key_node, value_node in zip(node.keys, node.values, strict=True):
        if key_node is None:
            continue  # `**` unpacking: static_problem refuses it first
        key = evaluate_node(run, key_node, scope)
        builder.admit(out, key)
        out[key] = evaluate_node(run, value_node, scope)
    return run.result(out)


def _bind(target: ast.expr, value: object, scope: Scope) -> None:
    if isinstance(target, ast.Name):
        scope[target.id] = value
        return
    assert isinstance(target, ast.Tuple | ast.List)
    if not isinstance(value, list | tuple) or len(value) != len(target.elts):
        size = len(value) if isinstance(value, SEQUENCES) else kind(value)
        raise ExpressionError(f"cannot unpack {size} into {len(target.elts)} names")
    for part, item in zip(target.elts, value, strict=True):
        _bind(part, item, scope)


def _comprehension(run: Run, generators: list[ast.comprehension], scope: Scope, emit: Callable[[Scope], None]) -> None:
    first, rest = generators[0], generators[1:]
    inner = dict(scope)
    for item in run.loop(evaluate_node(run, first.iter, scope), "a comprehension"):  # counts every element up front
        run.tick()
        _bind(first.target, item, inner)
        if all(evaluate_node(run, condition, inner) for condition in first.ifs):
            if rest:
                _comprehension(run, rest, inner, emit)
            else:
                emit(inner)


def _ev_listcomp(run: Run, node: ast.ListComp | ast.GeneratorExp | ast.SetComp, scope: Scope) -> Any:
    """A list (a generator expression is one too) or a set, built one element at a time under the budget."""
    out: list[Any] | set[Any] = set() if isinstance(node, ast.SetComp) else []
    builder = HashedBuilder(run, "set item")
    size = 0

    def emit(inner: Scope) -> None:
        nonlocal size
        value = evaluate_node(run, node.elt, inner)
        size += run.weigh(value)
        if size > MAX_DEEP:
            raise too_large("items and characters, counting what its items hold", MAX_DEEP)
        if isinstance(out, set):
            builder.admit(out, value)
            out.add(value)
        else:
            out.append(value)

    _comprehension(run, node.generators, scope, emit)
    return run.result(out)


def _ev_dictcomp(run: Run, node: ast.DictComp, scope: Scope) -> Any:
    out: dict[Any, Any] = {}
    builder = HashedBuilder(run, "dict key")

    def emit(inner: Scope) -> None:
        key = evaluate_node(run, node.key, inner)
        value = evaluate_node(run, node.value, inner)
        builder.admit(out, key)
        out[key] = value

    _comprehension(run, node.generators, scope, emit)
    return run.result(out)


def _ev_joinedstr(run: Run, node: ast.JoinedStr, scope: Scope) -> Any:
    parts: list[str] = []
    size = 0
    for value in node.values:
        part = evaluate_node(run, value, scope)
        text = part if isinstance(part, str) else text_of(run, part)
        size += len(text)
        if size > MAX_SIZE:
            raise too_large("characters")
        parts.append(text)
    return run.result("".join(parts))


def _ev_formattedvalue(run: Run, node: ast.FormattedValue, scope: Scope) -> Any:
    return text_of(run, evaluate_node(run, node.value, scope))


EVALUATORS: dict[type[ast.AST], Callable[[Run, Any, Scope], Any]] = {
    ast.Constant: _ev_constant,
    ast.Name: _ev_name,
    ast.BoolOp: _ev_boolop,
    ast.BinOp: _ev_binop,
    ast.UnaryOp: _ev_unaryop,
    ast.Compare: _ev_compare,
    ast.IfExp: _ev_ifexp,
    ast.Attribute: _ev_attribute,
    ast.Subscript: _ev_subscript,
    ast.Call: _ev_call,
    ast.List: _ev_list,
    ast.Tuple: _ev_tuple,
    ast.Set: _ev_set,
    ast.Dict: _ev_dict,
    ast.ListComp: _ev_listcomp,
    ast.GeneratorExp: _ev_listcomp,
    ast.SetComp: _ev_listcomp,
    ast.DictComp: _ev_dictcomp,
    ast.JoinedStr: _ev_joinedstr,
    ast.FormattedValue: _ev_formattedvalue,
}
