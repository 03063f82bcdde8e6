"""The sandbox for heuristic expressions: template authors' Python, run without Python's `eval`.

A heuristic rule (and a trigger's `where`) is a Python expression a template author typed, evaluated on every
visit of its node. It must not reach the interpreter (no `__class__` walks, no imports, no `format` tricks), and
it must not be able to hang the worker or exhaust its memory. So the expression is parsed once into a syntax
tree, checked against an allowlist, and evaluated by walking the tree here; every operation that could grow a
value is bounded before it allocates, and the walk keeps a time budget.

What an expression may use:
- names: the variables it is given (`state` and `contact` for rules, `contact` and `event` for triggers), `now`
  (an aware UTC datetime) and comprehension variables (`_` is a fine throwaway name);
- literals (str, int, float, True/False/None), list/tuple/dict/set displays, comprehensions (a generator
  expression is evaluated as a list), `and`/`or`/`not`, arithmetic, comparisons, `x if c else y`, indexing and
  slicing, and f-strings with plain `{value}` fields (no `!r`/`!a`, no format spec: they can allocate at will);
- `x.key` on a dict reads the key, like `x["key"]`; a missing key, and any key or index of `None`, gives `None`
  (so `state.a.b` is `None` when `a` is missing); an index past the end of a list is `None` too;
- the helpers (`HELPERS`) and the methods of `METHODS` on str, list, tuple, dict, datetime and timedelta values.
  On a dict, `d.items()` is the method and `d.items` the key: a call picks the method. `keys()`, `values()` and
  `items()` give lists. No method changes a value: expressions cannot alter the instance's state.
Nothing starting with `_` (other than a bare `_` variable) can be named or read as an attribute; `state["_x"]`
is a plain key lookup and is allowed.

Limits (each breach is an `ExpressionError` with a sentence the template author can act on):
- the expression: `MAX_EXPRESSION_CHARS` characters, `MAX_EXPRESSION_DEPTH` levels of syntax tree;
- a str, list, tuple, dict or set built by the expression: `MAX_SIZE` characters or items, checked before the
  allocation where the size is known in advance (`*`, `+`, `ljust`/`rjust`/`center`/`zfill`, `replace`,
  `join`), and `MAX_DEEP` counting everything it holds (so `[[0] * 10000] * 10000`, which is small in memory
  but huge to compare or print, is refused); `MAX_ALLOCATED` for everything one evaluation builds;
- integers: `MAX_INT_BITS` bits (any integer a JSON float can hold); `**` and `<<` are refused from the
  operands' bit lengths before computing; text read as a number: `MAX_NUMBER_TEXT` characters;
  floats must stay finite; complex results are refused;
- loops: `MAX_STEPS` elements in all per evaluation (comprehensions and the helpers that walk a list);
- time: `timeout_s` of this thread's CPU time (50 ms by default), checked as the walk goes. CPU time rather than
  wall-clock time so that a busy server (other threads holding the GIL, the OS scheduling us out) never fails a
  small expression; an expression that hangs is one that computes, and that is what it measures;
- hash chains: a set (or a dict's keys) may hold at most `MAX_SET_COLLISIONS` distinct items of one hash value,
  and sets and dicts are built one item at a time, so no single insertion walks a long chain.

`static_problem` is what validation reports; `evaluate` refuses the same expressions with the same sentence.

The package, in the order a call goes through it: `parsing` (parse once, cached) → `checker` (the allowlist)
→ `evaluator` (the walk) using `operators`, `helpers` and `methods`, all under `budget` (time, steps, sizes) and
`limits` (the numbers, and `ExpressionError`); `words` names values in messages.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from .budget import Run
from .evaluator import evaluate_node
from .helpers import HELPERS
from .limits import (
    DEFAULT_TIMEOUT_S,
    MAX_ALLOCATED,
    MAX_DEEP,
    MAX_EXPRESSION_CHARS,
    MAX_EXPRESSION_DEPTH,
    MAX_INT_BITS,
    MAX_NUMBER_TEXT,
    MAX_SET_COLLISIONS,
    MAX_SIZE,
    MAX_STEPS,
    RULE_NAMES,
    TRIGGER_NAMES,
    ExpressionError,
)
from .methods import METHODS
from .parsing import AST_LOCK, compile_expression

__all__ = [
    "AST_LOCK",
    "DEFAULT_TIMEOUT_S",
    "HELPERS",
    "MAX_ALLOCATED",
    "MAX_DEEP",
    "MAX_EXPRESSION_CHARS",
    "MAX_EXPRESSION_DEPTH",
    "MAX_INT_BITS",
    "MAX_NUMBER_TEXT",
    "MAX_SET_COLLISIONS",
    "MAX_SIZE",
    "MAX_STEPS",
    "METHODS",
    "RULE_NAMES",
    "TRIGGER_NAMES",
    "ExpressionError",
    "evaluate",
    "static_problem",
]


def static_problem(expression: str, names: Iterable[str]) -> tuple[str, str] | None:
    """(code, detail) when `expression` cannot run with `names` in scope, else None. Never raises.

    Validation calls this on every save, so a template author learns about a bad rule before any instance
    runs it. The codes: `expression_too_long`, `expression_syntax`, `expression_too_deep`,
    `expression_forbidden` (a construct outside the sandbox: lambda, private name, unknown method...) and
    `expression_unknown_name`. The detail completes "... has an expression that <detail>".
    """
    try:
        if not isinstance(expression, str):
            return "expression_syntax", "is not text"
        compiled = compile_expression(expression, tuple(dict.fromkeys(names)))
        return None if isinstance(compiled, ast.Expression) else compiled
    except Exception:  # a safety net: validation must answer whatever it is given
        return "expression_syntax", "could not be checked"


def evaluate(
    expression: str,
    variables: Mapping[str, Any],
    *,
    now: datetime | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Any:
    """The value of `expression` over `variables` (JSON values), `now` and the helpers; else ExpressionError.

    `variables` is `{"state": ..., "contact": ...}` for a heuristic rule or `{"contact": ..., "event": ...}` for
    a trigger; `now` defaults to the current time (a naive `now` is taken as UTC). The expression is parsed and
    checked once (cached), then walked here: any failure, and any limit reached, is an ExpressionError whose
    message names the problem. The variables are only read, never changed.
    """
    if not (math.isfinite(timeout_s) and timeout_s > 0):
        raise ValueError("timeout_s must be a positive number of seconds")
    moment = datetime.now(UTC) if now is None else now
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    compiled = compile_expression(expression, tuple(dict.fromkeys([*variables, "now"])))
    if not isinstance(compiled, ast.Expression):
        raise ExpressionError(f"the expression {compiled[1]}")
    run = Run(variables, moment, timeout_s)
    try:
        return evaluate_node(run, compiled.body, {})
    except ExpressionError:
        raise
    except ZeroDivisionError:
        raise ExpressionError("divides by zero") from None
    except ArithmeticError:  # OverflowError, and anything else a number operation raises
        raise ExpressionError("a number would be too large") from None
    except RecursionError:
        raise ExpressionError("nests too deeply to run") from None
    except MemoryError:
        raise ExpressionError("ran out of memory") from None
    except (TypeError, ValueError, IndexError, KeyError) as exc:
        # Python's own words for what a helper or method refused (wrong type, "substring not found"...).
        message = str(exc).replace("instances of ", "").replace("'NoneType'", "None")
        raise ExpressionError(message if len(message) <= 200 else message[:199] + "…") from None
