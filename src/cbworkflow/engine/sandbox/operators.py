"""The operators (`+`, `in`, `<`...), and the checks that refuse from the operands alone a result too large to
build."""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from datetime import datetime
from typing import Any

from .budget import Run
from .limits import MAX_DEEP, MAX_INT_BITS, MAX_SIZE, ExpressionError, int_too_large, too_large
from .words import SEQUENCES, kind, none_hint

BINARY: dict[type[ast.operator], tuple[str, Callable[[Any, Any], Any]]] = {
    ast.Add: ("+", operator.add),
    ast.Sub: ("-", operator.sub),
    ast.Mult: ("*", operator.mul),
    ast.Div: ("/", operator.truediv),
    ast.FloorDiv: ("//", operator.floordiv),
    ast.Mod: ("%", operator.mod),
    ast.Pow: ("**", operator.pow),
    ast.LShift: ("<<", operator.lshift),
    ast.RShift: (">>", operator.rshift),
    ast.BitOr: ("|", operator.or_),
    ast.BitAnd: ("&", operator.and_),
    ast.BitXor: ("^", operator.xor),
}
UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
    ast.Invert: lambda value: ~int(value) if isinstance(value, bool) else ~value,  # ~True warns on 3.12+
    ast.Not: operator.not_,
}
COMPARE: dict[type[ast.cmpop], tuple[str, Callable[[Any, Any], Any]]] = {
    ast.Eq: ("==", operator.eq),
    ast.NotEq: ("!=", operator.ne),
    ast.Lt: ("<", operator.lt),
    ast.LtE: ("<=", operator.le),
    ast.Gt: (">", operator.gt),
    ast.GtE: (">=", operator.ge),
    ast.Is: ("is", operator.is_),
    ast.IsNot: ("is not", operator.is_not),
    ast.In: ("in", lambda a, b: a in b),
    ast.NotIn: ("not in", lambda a, b: a not in b),
}


def binary_precheck(run: Run, symbol: str, a: object, b: object) -> None:
    """Refuse, from the operands alone, the operations whose result would be too large to build."""
    if isinstance(a, int) and isinstance(b, int) and b > 0 and a != 0:
        bits = abs(a).bit_length()
        if (symbol == "**" and (bits - 1) * b >= MAX_INT_BITS) or (symbol == "<<" and bits + b > MAX_INT_BITS):
            raise int_too_large()
    if symbol == "*":
        seq, times = (a, b) if isinstance(a, SEQUENCES) else (b, a)
        if isinstance(seq, SEQUENCES) and isinstance(times, int) and times > 1:
            if len(seq) * times > MAX_SIZE:
                raise too_large("characters" if isinstance(seq, str) else "items")
            if not isinstance(seq, str) and run.weigh(seq) * times > MAX_DEEP:
                raise too_large("items and characters, counting what its items hold", MAX_DEEP)
    elif symbol == "+" and isinstance(a, SEQUENCES) and isinstance(b, SEQUENCES):
        if len(a) + len(b) > MAX_SIZE:
            raise too_large("characters" if isinstance(a, str) else "items")
    elif symbol == "%" and isinstance(a, str):
        raise ExpressionError("'%' formatting of text is not available: build text with + and str()")


def compare_error(symbol: str, a: object, b: object) -> ExpressionError:
    if symbol in ("in", "not in"):
        return ExpressionError(
            f"'{symbol}' needs text, a list or a dict on its right (and text in text), "
            f"not {kind(a)} in {kind(b)}{none_hint(a, b)}"
        )
    hint = none_hint(a, b)
    if {type(a), type(b)} == {datetime, str}:
        hint = " (for a time written as text, use days_since() or hours_since())"
    return ExpressionError(f"'{symbol}' not supported between {kind(a)} and {kind(b)}{hint}")
