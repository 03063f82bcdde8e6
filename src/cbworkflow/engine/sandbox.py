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
  small expression; an expression that hangs is one that computes, and that is what it measures.

`static_problem` is what validation reports; `evaluate` refuses the same expressions with the same sentence.
"""

from __future__ import annotations

import ast
import math
import operator
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

__all__ = [
    "AST_LOCK",
    "HELPERS",
    "MAX_ALLOCATED",
    "MAX_DEEP",
    "MAX_EXPRESSION_CHARS",
    "MAX_EXPRESSION_DEPTH",
    "MAX_INT_BITS",
    "MAX_NUMBER_TEXT",
    "MAX_SIZE",
    "MAX_STEPS",
    "METHODS",
    "RULE_NAMES",
    "TRIGGER_NAMES",
    "ExpressionError",
    "evaluate",
    "static_problem",
]

MAX_EXPRESSION_CHARS: Final = 10_000
# Syntax-tree depth (`a + b + c` nests one level per `+`): the walk recurses, so a saved template must not be
# able to exhaust the stack at run time.
MAX_EXPRESSION_DEPTH: Final = 100
MAX_SIZE: Final = 100_000  # characters of a str, or items of a list/tuple/dict/set, the expression builds
MAX_DEEP: Final = 1_000_000  # items and characters of a built value, counting what its items hold
MAX_ALLOCATED: Final = 1_000_000  # characters and items built by one evaluation, in all
MAX_STEPS: Final = 100_000  # elements looped over by one evaluation, in all
MAX_INT_BITS: Final = 1_024  # 2**1024 is just past the largest float: every JSON number fits
MAX_NUMBER_TEXT: Final = 400  # characters int()/float() read: no quadratic digit conversions
MAX_ROUND_DIGITS: Final = 400
DEFAULT_TIMEOUT_S: Final = 0.05

RULE_NAMES: Final = ("state", "contact", "now")
TRIGGER_NAMES: Final = ("contact", "event", "now")

# CPython 3.11 before 3.11.8 corrupts the ast module's state when two threads build trees at once (gh-106905).
# The server parses on the event loop and in worker threads, so every ast.parse in the project holds this lock.
AST_LOCK = threading.Lock()

_CHECK_EVERY = 256  # ticks (units of work, about a microsecond each) between two looks at the clock
_CACHE_ENTRIES = 512
_CACHE_CHARS = 200_000  # parsed trees take ~200 bytes a source character: this keeps the cache to tens of MB


class ExpressionError(Exception):
    """An expression cannot be run, or failed while running; the message is for the template author."""


# --- values ---------------------------------------------------------------------------------------------------


def _kind(value: object) -> str:
    """How messages name a value's type."""
    if value is None:
        return "None"
    return type(value).__name__


def _none_hint(*values: object) -> str:
    return " (a missing key or field gives None)" if any(v is None for v in values) else ""


def _q(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def _too_large(what: str = "characters or items", limit: int = MAX_SIZE) -> ExpressionError:
    return ExpressionError(f"the result would be too large (over {limit:,} {what})")


def _int_too_large() -> ExpressionError:
    return ExpressionError(f"a number would be too large (the limit is {MAX_INT_BITS} bits, about 1.8e308)")


_SEQUENCES = (list, tuple, str)
_FLAT: frozenset[type] = frozenset({bool, float, type(None), datetime, timedelta})
_CONTAINERS = (list, tuple, dict, set, frozenset)


def _a(value: object) -> str:
    """'a str', 'an int': how messages name a value's type with its article."""
    kind = _kind(value)
    return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"


class _Run:
    """One evaluation: the variables, the clock and the budgets. Never shared between threads."""

    __slots__ = (
        *("allocated", "deadline", "next_check", "now", "steps", "ticks", "timeout_s", "variables", "weights"),
    )

    def __init__(self, variables: Mapping[str, Any], now: datetime, timeout_s: float) -> None:
        self.variables = variables
        self.now = now
        self.timeout_s = timeout_s
        self.deadline = time.thread_time() + timeout_s
        self.ticks = 0
        self.next_check = _CHECK_EVERY
        self.steps = 0
        self.allocated = 0
        self.weights: dict[int, tuple[object, int]] = {}  # id -> (value, weight) of containers weighed

    # budgets

    def tick(self, work: int = 1) -> None:
        """Count work; every `_CHECK_EVERY` units, look at the clock."""
        self.ticks += work
        if self.ticks >= self.next_check:
            self.next_check = self.ticks + _CHECK_EVERY
            if time.thread_time() > self.deadline:
                ms = self.timeout_s * 1000
                raise ExpressionError(f"took longer than {ms:g} ms (the time limit of an expression)")

    def step(self, count: int = 1) -> None:
        """Count elements looped over."""
        self.steps += count
        if self.steps > MAX_STEPS:
            raise ExpressionError(f"loops over more than {MAX_STEPS:,} items in all")
        self.tick(count)

    def allocate(self, size: int, what: str) -> None:
        if size > MAX_SIZE:
            raise _too_large(what)
        self.allocated += size
        if self.allocated > MAX_ALLOCATED:
            raise ExpressionError(f"builds too much (over {MAX_ALLOCATED:,} characters and items in all)")
        self.tick(size)

    def weigh(self, value: object) -> int:
        """Items and characters of `value`, counting what its items hold (aliases each time they appear).

        This is what comparing, hashing or printing the value costs, so built values are refused past
        `MAX_DEEP`; and str()/repr() of a value is at least this long, which lets `str` refuse before it builds.
        Values the expression built are weighed once, when built (`result`), and remembered, so weighing a
        new container only looks at its own items. Anything else is input data (JSON: a tree, no aliases),
        weighed once by the length of its repr, at C speed.
        """
        if isinstance(value, str):
            return len(value) + 1
        if isinstance(value, int) and not isinstance(value, bool):
            return max(1, value.bit_length() * 3 // 10)  # at most its number of digits
        if not isinstance(value, _CONTAINERS):
            return 1
        found = self.weights.get(id(value))
        if found is None and isinstance(value, tuple):  # built by Python for us (`items()` pairs): no JSON tuple
            return self.weigh_built(value)
        if found is None:
            found = self.weights[id(value)] = (value, len(repr(value)))  # the entry keeps the id from reuse
            self.tick(found[1] // 8)
        return found[1]

    def weigh_built(self, container: list[Any] | tuple[Any, ...] | dict[Any, Any] | set[Any]) -> int:
        items: Collection[Any] = container
        if isinstance(container, dict):
            items = (*container.keys(), *container.values())
        total = len(container) + 1
        kinds = set(map(type, items))  # flat containers (the big ones, in practice) are weighed at C speed
        if kinds <= {str}:
            total += sum(map(len, items)) + len(container)
        elif kinds <= {int}:
            total += len(container) + sum(map(int.bit_length, items)) * 3 // 10  # digits, give or take one
        elif kinds <= _FLAT:
            total += len(container)
        else:
            for item in items:
                total += self.weigh(item)
                if total > MAX_DEEP:
                    break
        if total > MAX_DEEP:
            raise _too_large("items and characters, counting what its items hold", MAX_DEEP)
        self.weights[id(container)] = (container, total)
        self.tick(len(container))
        return total

    def result(self, value: Any) -> Any:
        """Check a value an operator, method or helper produced: finite numbers, bounded sizes."""
        if value is None or isinstance(value, (bool, datetime, timedelta)):
            return value
        if isinstance(value, int):
            if value.bit_length() > MAX_INT_BITS:
                raise _int_too_large()
            return value
        if isinstance(value, float):
            if not math.isfinite(value):
                raise ExpressionError("the result is not a finite number (too large, or not a number)")
            return value
        if isinstance(value, str):
            self.allocate(len(value), "characters")
            return value
        if isinstance(value, _CONTAINERS):
            if len(value) > MAX_SIZE:
                raise _too_large("items")
            self.weigh_built(value)  # type: ignore[arg-type]
            self.allocate(len(value), "items")
            return value
        if isinstance(value, complex):
            raise ExpressionError("the result is a complex number")
        raise ExpressionError(f"produced {_a(value)} value, which expressions cannot use")

    def loop(self, value: object, what: str) -> Any:
        """The elements of a value looped over, counted against the step budget."""
        if isinstance(value, (*_SEQUENCES, dict, set, frozenset)):
            self.step(len(value))
            return value
        raise ExpressionError(f"{what} needs a list, text or dict to loop over, not {_kind(value)}{_none_hint(value)}")


# --- helpers --------------------------------------------------------------------------------------------------


def _number_text(text: str, what: str) -> str:
    stripped = text.strip()
    if len(stripped) > MAX_NUMBER_TEXT:
        raise ExpressionError(f"{what}() cannot read text of over {MAX_NUMBER_TEXT} characters as a number")
    return stripped


def _h_int(run: _Run, value: object) -> int:
    if isinstance(value, bool | int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ExpressionError("int() of a number that is not finite")
        return int(value)
    if isinstance(value, str):
        try:
            return int(_number_text(value, "int"))
        except ValueError:
            raise ExpressionError(f"int() cannot read {_q(value)} as a whole number") from None
    raise ExpressionError(f"int() needs a number or text, not {_kind(value)}{_none_hint(value)}")


def _h_float(run: _Run, value: object) -> float:
    if isinstance(value, bool | int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(_number_text(value, "float"))
        except ValueError:
            raise ExpressionError(f"float() cannot read {_q(value)} as a number") from None
    raise ExpressionError(f"float() needs a number or text, not {_kind(value)}{_none_hint(value)}")


def _h_str(run: _Run, value: object = "") -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, _CONTAINERS) and run.weigh(value) > MAX_SIZE:
        raise _too_large("characters")  # str() is at least as long as `deep` counts: refuse before building
    return str(value)


def _h_len(run: _Run, value: object) -> int:
    if value is None:
        return 0
    if isinstance(value, (*_SEQUENCES, dict, set, frozenset)):
        return len(value)
    raise ExpressionError(f"len() needs text, a list or a dict, not {_kind(value)}")


def _h_bool(run: _Run, value: object = False) -> bool:
    return bool(value)


def _h_abs(run: _Run, value: object) -> Any:
    if isinstance(value, bool | int | float | timedelta):
        return abs(value)
    raise ExpressionError(f"abs() needs a number, not {_kind(value)}{_none_hint(value)}")


def _h_round(run: _Run, value: object, digits: object = None) -> Any:
    if not isinstance(value, bool | int | float):
        raise ExpressionError(f"round() needs a number, not {_kind(value)}{_none_hint(value)}")
    if digits is None:
        return round(value)
    if not isinstance(digits, int) or abs(digits) > MAX_ROUND_DIGITS:
        raise ExpressionError(
            f"round() takes a whole number of digits between -{MAX_ROUND_DIGITS} and {MAX_ROUND_DIGITS}"
        )
    return round(value, digits)


def _extreme(name: str, pick: Callable[..., Any]) -> Callable[..., Any]:
    def helper(run: _Run, *args: object, **kwargs: object) -> Any:
        items = run.loop(args[0], f"{name}()") if len(args) == 1 else args
        if not items and "default" in kwargs:
            return kwargs["default"]
        if not items:
            raise ExpressionError(f"{name}() of an empty list (give a default: {name}(x, default=0))")
        run.tick(len(items))
        return pick(items)

    return helper


def _h_any(run: _Run, values: object) -> bool:
    return any(run.loop(values, "any()"))


def _h_all(run: _Run, values: object) -> bool:
    return all(run.loop(values, "all()"))


def _h_sorted(run: _Run, values: object, reverse: object = False) -> list[Any]:
    items = run.loop(values, "sorted()")
    run.tick(len(items) * max(1, len(items).bit_length()))
    return sorted(items, reverse=bool(reverse))


def _h_sum(run: _Run, values: object, start: object = 0) -> Any:
    total = start
    for item in run.loop(values, "sum()"):
        if not isinstance(item, bool | int | float) or not isinstance(total, bool | int | float):
            raise ExpressionError(f"sum() adds numbers only, not {_kind(item)}{_none_hint(item)}")
        total = run.result(total + item)
    return total


def _h_lower(run: _Run, value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value.lower()
    raise ExpressionError(f"lower() needs text, not {_kind(value)}")


def _h_upper(run: _Run, value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value.upper()
    raise ExpressionError(f"upper() needs text, not {_kind(value)}")


def _h_contains(run: _Run, haystack: object, needle: object) -> bool:
    if haystack is None:
        return False
    if isinstance(haystack, str):
        if not isinstance(needle, str):
            raise ExpressionError(f"contains() of text looks for text, not {_kind(needle)}")
        return needle in haystack
    if isinstance(haystack, (list, tuple, dict, set, frozenset)):
        run.tick(len(haystack))
        return needle in haystack
    raise ExpressionError(f"contains() needs text, a list or a dict, not {_kind(haystack)}")


def _moment(run: _Run, value: object, name: str) -> datetime | None:
    if value is None or isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip()) if len(value) <= 64 else None
        except ValueError:
            moment = None
        if moment is None:
            raise ExpressionError(f"{name}() cannot read {_q(value)}: use an ISO 8601 time like 2026-03-01T12:00:00Z")
    else:
        raise ExpressionError(f"{name}() needs an ISO 8601 date and time, not {_kind(value)}")
    if moment is not None and moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # a time without offset is taken as UTC
    return moment


def _h_days_since(run: _Run, value: object) -> float | None:
    moment = _moment(run, value, "days_since")
    return None if moment is None else (run.now - moment) / timedelta(days=1)


def _h_hours_since(run: _Run, value: object) -> float | None:
    moment = _moment(run, value, "hours_since")
    return None if moment is None else (run.now - moment) / timedelta(hours=1)


# name -> (function, fewest arguments, most arguments, keywords it takes). Every helper's result is checked by
# `_Run.result` (sizes, finite numbers), except min and max: they pick a value that already exists.
HELPERS: Final[Mapping[str, tuple[Callable[..., Any], int, int, frozenset[str]]]] = {
    "len": (_h_len, 1, 1, frozenset()),
    "int": (_h_int, 1, 1, frozenset()),
    "float": (_h_float, 1, 1, frozenset()),
    "str": (_h_str, 0, 1, frozenset()),
    "bool": (_h_bool, 0, 1, frozenset()),
    "lower": (_h_lower, 1, 1, frozenset()),
    "upper": (_h_upper, 1, 1, frozenset()),
    "contains": (_h_contains, 2, 2, frozenset()),
    "days_since": (_h_days_since, 1, 1, frozenset()),
    "hours_since": (_h_hours_since, 1, 1, frozenset()),
    "abs": (_h_abs, 1, 1, frozenset()),
    "round": (_h_round, 1, 2, frozenset()),
    "min": (_extreme("min", min), 1, 1_000, frozenset({"default"})),
    "max": (_extreme("max", max), 1, 1_000, frozenset({"default"})),
    "any": (_h_any, 1, 1, frozenset()),
    "all": (_h_all, 1, 1, frozenset()),
    "sorted": (_h_sorted, 1, 1, frozenset({"reverse"})),
    "sum": (_h_sum, 1, 2, frozenset()),
}


# --- methods --------------------------------------------------------------------------------------------------

_STR_METHOD_NAMES = (
    *("lower", "upper", "casefold", "title", "capitalize", "swapcase", "strip", "lstrip", "rstrip"),
    *("removeprefix", "removesuffix", "startswith", "endswith", "find", "rfind", "index", "rindex", "count"),
    *("isdigit", "isalpha", "isalnum", "isspace", "isupper", "islower", "isnumeric", "isdecimal", "istitle"),
    *("isascii", "split", "rsplit", "splitlines", "partition", "rpartition", "replace", "join"),
    *("ljust", "rjust", "center", "zfill"),
)
_STR_METHODS: dict[str, Callable[..., Any]] = {name: getattr(str, name) for name in _STR_METHOD_NAMES}
_SEQ_METHODS: dict[str, Callable[..., Any]] = {"count": operator.countOf, "index": operator.indexOf}
_DATETIME_METHODS: dict[str, Callable[..., Any]] = {
    name: getattr(datetime, name) for name in ("weekday", "isoweekday", "isoformat", "timestamp")
}
_TIMEDELTA_METHODS: dict[str, Callable[..., Any]] = {"total_seconds": timedelta.total_seconds}
_DICT_METHOD_NAMES = ("get", "keys", "values", "items")
_FIELDS: dict[type, frozenset[str]] = {
    datetime: frozenset({"year", "month", "day", "hour", "minute", "second", "microsecond"}),
    timedelta: frozenset({"days", "seconds", "microseconds"}),
}
METHODS: Final[frozenset[str]] = frozenset(
    {*_STR_METHODS, *_SEQ_METHODS, *_DATETIME_METHODS, *_TIMEDELTA_METHODS, *_DICT_METHOD_NAMES}
)


def _str_precheck(text: str, name: str, args: tuple[Any, ...]) -> None:
    """Refuse, before allocating, the str methods whose result can be far longer than their inputs."""
    if name in ("ljust", "rjust", "center", "zfill"):
        if args and isinstance(args[0], int) and args[0] > MAX_SIZE:
            raise _too_large("characters")
    elif name == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        old, new = args[0], args[1]
        count = text.count(old)  # cheap: no allocation; an empty `old` matches len + 1 times
        if len(args) > 2 and isinstance(args[2], int) and args[2] >= 0:
            count = min(count, args[2])
        if len(text) + count * (len(new) - len(old)) > MAX_SIZE:
            raise _too_large("characters")
    elif name == "join" and len(args) == 1 and isinstance(args[0], (list, tuple, set, frozenset, dict, str)):
        parts = args[0]
        size = sum(len(p) for p in parts if isinstance(p, str)) + len(text) * max(0, len(parts) - 1)
        if size > MAX_SIZE:
            raise _too_large("characters")


def _call_method(run: _Run, target: object, name: str, args: tuple[Any, ...]) -> Any:
    if isinstance(target, str) and name in _STR_METHODS:
        if name == "join" and args:
            run.loop(args[0], "join()")
        _str_precheck(target, name, args)
        return _STR_METHODS[name](target, *args)
    if isinstance(target, dict) and name in _DICT_METHOD_NAMES:
        if name == "get":
            if not 1 <= len(args) <= 2:
                raise ExpressionError(f"get() takes a key and an optional default, not {len(args)} values")
            return target.get(*args)
        if args:
            raise ExpressionError(f"{name}() takes no values")
        run.step(len(target))
        return list(target.keys() if name == "keys" else target.values() if name == "values" else target.items())
    if isinstance(target, list | tuple) and name in _SEQ_METHODS:
        if len(args) != 1:
            raise ExpressionError(f"{name}() takes one value")
        run.tick(len(target))
        try:
            return _SEQ_METHODS[name](target, args[0])
        except ValueError:
            raise ExpressionError(f"index(): the value is not in the {_kind(target)}") from None
    if isinstance(target, datetime) and name in _DATETIME_METHODS:
        return _DATETIME_METHODS[name](target, *args)
    if isinstance(target, timedelta) and name in _TIMEDELTA_METHODS:
        return _TIMEDELTA_METHODS[name](target, *args)
    if target is None:
        raise ExpressionError(f"cannot call {name}() on None (a missing key or field gives None)")
    raise ExpressionError(f"{_a(target)} value has no method {name}()")


# --- operators ------------------------------------------------------------------------------------------------

_BINARY: dict[type[ast.operator], tuple[str, Callable[[Any, Any], Any]]] = {
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
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
    ast.Invert: lambda value: ~int(value) if isinstance(value, bool) else ~value,  # ~True warns on 3.12+
    ast.Not: operator.not_,
}
_COMPARE: dict[type[ast.cmpop], tuple[str, Callable[[Any, Any], Any]]] = {
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


def _binary_precheck(run: _Run, symbol: str, a: object, b: object) -> None:
    """Refuse, from the operands alone, the operations whose result would be too large to build."""
    if isinstance(a, int) and isinstance(b, int) and b > 0 and a != 0:
        bits = abs(a).bit_length()
        if (symbol == "**" and (bits - 1) * b >= MAX_INT_BITS) or (symbol == "<<" and bits + b > MAX_INT_BITS):
            raise _int_too_large()
    if symbol == "*":
        seq, times = (a, b) if isinstance(a, _SEQUENCES) else (b, a)
        if isinstance(seq, _SEQUENCES) and isinstance(times, int) and times > 1:
            if len(seq) * times > MAX_SIZE:
                raise _too_large("characters" if isinstance(seq, str) else "items")
            if not isinstance(seq, str) and run.weigh(seq) * times > MAX_DEEP:
                raise _too_large("items and characters, counting what its items hold", MAX_DEEP)
    elif symbol == "+" and isinstance(a, _SEQUENCES) and isinstance(b, _SEQUENCES):
        if len(a) + len(b) > MAX_SIZE:
            raise _too_large("characters" if isinstance(a, str) else "items")
    elif symbol == "%" and isinstance(a, str):
        raise ExpressionError("'%' formatting of text is not available: build text with + and str()")


def _compare_error(symbol: str, a: object, b: object) -> ExpressionError:
    if symbol in ("in", "not in"):
        return ExpressionError(
            f"'{symbol}' needs text, a list or a dict on its right (and text in text), "
            f"not {_kind(a)} in {_kind(b)}{_none_hint(a, b)}"
        )
    hint = _none_hint(a, b)
    if {type(a), type(b)} == {datetime, str}:
        hint = " (for a time written as text, use days_since() or hours_since())"
    return ExpressionError(f"'{symbol}' not supported between {_kind(a)} and {_kind(b)}{hint}")


# --- evaluation -----------------------------------------------------------------------------------------------

Scope = dict[str, Any]


def _ev(run: _Run, node: ast.AST, scope: Scope) -> Any:
    run.tick()
    return _EVAL[type(node)](run, node, scope)


def _ev_constant(run: _Run, node: ast.Constant, scope: Scope) -> Any:
    return node.value


def _ev_name(run: _Run, node: ast.Name, scope: Scope) -> Any:
    if node.id in scope:
        return scope[node.id]
    if node.id == "now":
        return run.now
    if node.id in run.variables:
        return run.variables[node.id]
    raise ExpressionError(f"name {node.id!r} is not defined")  # static_problem refuses this first


def _ev_boolop(run: _Run, node: ast.BoolOp, scope: Scope) -> Any:
    value: Any = None
    for operand in node.values:
        value = _ev(run, operand, scope)
        if bool(value) == isinstance(node.op, ast.Or):
            return value
    return value


def _ev_binop(run: _Run, node: ast.BinOp, scope: Scope) -> Any:
    a, b = _ev(run, node.left, scope), _ev(run, node.right, scope)
    symbol, function = _BINARY[type(node.op)]
    _binary_precheck(run, symbol, a, b)
    try:
        return run.result(function(a, b))
    except TypeError:
        raise ExpressionError(f"'{symbol}' not supported between {_kind(a)} and {_kind(b)}{_none_hint(a, b)}") from None


def _ev_unaryop(run: _Run, node: ast.UnaryOp, scope: Scope) -> Any:
    value = _ev(run, node.operand, scope)
    try:
        return run.result(_UNARY[type(node.op)](value))
    except TypeError:
        symbol = {ast.USub: "-", ast.UAdd: "+", ast.Invert: "~"}.get(type(node.op), "not")
        raise ExpressionError(f"'{symbol}' not supported for {_kind(value)}{_none_hint(value)}") from None


def _ev_compare(run: _Run, node: ast.Compare, scope: Scope) -> Any:
    left = _ev(run, node.left, scope)
    for op, right_node in zip(node.ops, node.comparators, strict=True):
        right = _ev(run, right_node, scope)
        symbol, function = _COMPARE[type(op)]
        if isinstance(right, _CONTAINERS) and symbol in ("in", "not in"):
            run.tick(len(right))
        try:
            if not function(left, right):
                return False
        except TypeError:
            raise _compare_error(symbol, left, right) from None
        left = right
    return True


def _ev_ifexp(run: _Run, node: ast.IfExp, scope: Scope) -> Any:
    return _ev(run, node.body if _ev(run, node.test, scope) else node.orelse, scope)


def _read(value: object, key: object) -> Any:
    """`value[key]` / `value.key` for reading data: dict keys, list/str indexes; missing gives None."""
    if value is None:
        return None
    if isinstance(value, dict):
        try:
            return value.get(key)
        except TypeError:
            raise ExpressionError(f"{_a(key)} cannot be a dict key") from None
    if isinstance(value, _SEQUENCES):
        if isinstance(key, int):
            return value[key] if -len(value) <= key < len(value) else None
        raise ExpressionError(f"{_a(value)} is indexed by whole numbers, not {_kind(key)}{_none_hint(key)}")
    raise ExpressionError(f"{_a(value)} value cannot be indexed")


def _ev_attribute(run: _Run, node: ast.Attribute, scope: Scope) -> Any:
    value = _ev(run, node.value, scope)
    if value is None or isinstance(value, dict):
        return _read(value, node.attr)
    fields = _FIELDS.get(type(value))
    if fields is not None and node.attr in fields:
        return getattr(value, node.attr)  # a fixed allowlist of datetime/timedelta fields
    if node.attr in METHODS:
        raise ExpressionError(f"{node.attr} is a method of {_kind(value)}: call it, like x.{node.attr}()")
    raise ExpressionError(f"{_a(value)} value has no field {node.attr!r} (fields are keys of dicts)")


def _ev_subscript(run: _Run, node: ast.Subscript, scope: Scope) -> Any:
    value = _ev(run, node.value, scope)
    if isinstance(node.slice, ast.Slice):
        bounds = [
            None if part is None else _ev(run, part, scope)
            for part in (node.slice.lower, node.slice.upper, node.slice.step)
        ]
        if not isinstance(value, _SEQUENCES):
            raise ExpressionError(f"only text, lists and tuples can be sliced, not {_kind(value)}{_none_hint(value)}")
        if not all(b is None or isinstance(b, int) for b in bounds):
            raise ExpressionError("slice bounds must be whole numbers")
        try:
            return run.result(value[slice(*bounds)])
        except ValueError:
            raise ExpressionError("a slice step cannot be zero") from None
    return _read(value, _ev(run, node.slice, scope))


def _ev_call(run: _Run, node: ast.Call, scope: Scope) -> Any:
    if isinstance(node.func, ast.Attribute):
        target = _ev(run, node.func.value, scope)
        args = tuple(_ev(run, arg, scope) for arg in node.args)
        value = _call_method(run, target, node.func.attr, args)
        return value if isinstance(target, dict) and node.func.attr == "get" else run.result(value)
    assert isinstance(node.func, ast.Name)  # static_problem allows nothing else
    function = HELPERS[node.func.id][0]
    args = tuple(_ev(run, arg, scope) for arg in node.args)
    kwargs = {kw.arg: _ev(run, kw.value, scope) for kw in node.keywords if kw.arg is not None}
    value = function(run, *args, **kwargs)
    return value if node.func.id in ("min", "max") else run.result(value)


def _ev_list(run: _Run, node: ast.List, scope: Scope) -> Any:
    return run.result([_ev(run, element, scope) for element in node.elts])


def _ev_tuple(run: _Run, node: ast.Tuple, scope: Scope) -> Any:
    return run.result(tuple(_ev(run, element, scope) for element in node.elts))


def _ev_set(run: _Run, node: ast.Set, scope: Scope) -> Any:
    return run.result({_ev(run, element, scope) for element in node.elts})


def _ev_dict(run: _Run, node: ast.Dict, scope: Scope) -> Any:
    return run.result(
        {_ev(run, k, scope): _ev(run, v, scope) for k, v in zip(node.keys, node.values, strict=True) if k is not None}
    )


def _bind(target: ast.expr, value: object, scope: Scope) -> None:
    if isinstance(target, ast.Name):
        scope[target.id] = value
        return
    assert isinstance(target, ast.Tuple | ast.List)
    if not isinstance(value, list | tuple) or len(value) != len(target.elts):
        size = len(value) if isinstance(value, _SEQUENCES) else _kind(value)
        raise ExpressionError(f"cannot unpack {size} into {len(target.elts)} names")
    for part, item in zip(target.elts, value, strict=True):
        _bind(part, item, scope)


def _comprehension(run: _Run, generators: list[ast.comprehension], scope: Scope, emit: Callable[[Scope], None]) -> None:
    first, rest = generators[0], generators[1:]
    inner = dict(scope)
    for item in run.loop(_ev(run, first.iter, scope), "a comprehension"):  # counts every element up front
        run.tick()
        _bind(first.target, item, inner)
        if all(_ev(run, condition, inner) for condition in first.ifs):
            if rest:
                _comprehension(run, rest, inner, emit)
            else:
                emit(inner)


def _ev_listcomp(run: _Run, node: ast.ListComp | ast.GeneratorExp | ast.SetComp, scope: Scope) -> Any:
    out: list[Any] = []
    size = 0

    def emit(inner: Scope) -> None:
        nonlocal size
        value = _ev(run, node.elt, inner)
        size += run.weigh(value)
        if size > MAX_DEEP:
            raise _too_large("items and characters, counting what its items hold", MAX_DEEP)
        out.append(value)

    _comprehension(run, node.generators, scope, emit)
    return run.result(set(out) if isinstance(node, ast.SetComp) else out)


def _ev_dictcomp(run: _Run, node: ast.DictComp, scope: Scope) -> Any:
    out: dict[Any, Any] = {}

    def emit(inner: Scope) -> None:
        key = _ev(run, node.key, inner)
        try:
            out[key] = _ev(run, node.value, inner)
        except TypeError:
            raise ExpressionError(f"{_a(key)} cannot be a dict key") from None
        if len(out) > MAX_SIZE:
            raise _too_large("items")

    _comprehension(run, node.generators, scope, emit)
    return run.result(out)


def _ev_joinedstr(run: _Run, node: ast.JoinedStr, scope: Scope) -> Any:
    parts: list[str] = []
    size = 0
    for value in node.values:
        part = _ev(run, value, scope)
        text = part if isinstance(part, str) else _h_str(run, part)
        size += len(text)
        if size > MAX_SIZE:
            raise _too_large("characters")
        parts.append(text)
    return run.result("".join(parts))


def _ev_formattedvalue(run: _Run, node: ast.FormattedValue, scope: Scope) -> Any:
    return _h_str(run, _ev(run, node.value, scope))


_EVAL: dict[type[ast.AST], Callable[[_Run, Any, Scope], Any]] = {
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


# --- static checks --------------------------------------------------------------------------------------------

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


class _Problem(Exception):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code, self.detail = code, detail


def _forbid(detail: str) -> _Problem:
    return _Problem("expression_forbidden", detail)


def _is_private(name: str) -> bool:
    return name.startswith("_") and name != "_"


class _Checker:
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
                raise _forbid(f"uses a private name {_q(node.attr)}")
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
        elif kind not in _EVAL and kind not in _PARTS:
            raise _forbid(f"uses {kind.__name__}, which expressions cannot use")
        if not isinstance(
            node, ast.Call | ast.ListComp | ast.GeneratorExp | ast.SetComp | ast.DictComp | ast.Attribute
        ):
            for child in ast.iter_child_nodes(node):
                self.check(child, scope)

    def name(self, name: str, scope: frozenset[str]) -> None:
        if _is_private(name):
            raise _forbid(f"uses a private name {_q(name)}")
        if name in scope or name in self.names:
            return
        if name in HELPERS:
            raise _forbid(f"uses the helper {name!r} without calling it, like {name}(x)")
        raise _Problem("expression_unknown_name", f"uses the name {_q(name)}, which is not defined: {self.hint()}")

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
        raise _forbid(f"uses {_a(value)} literal, which expressions cannot use")

    def call(self, node: ast.Call, scope: frozenset[str]) -> None:
        func = node.func
        if isinstance(func, ast.Attribute):
            if _is_private(func.attr):
                raise _forbid(f"uses a private name {_q(func.attr)}")
            if func.attr not in METHODS:
                raise _forbid(f"calls the method {_q(func.attr)}, which is not available in expressions")
            if node.keywords:
                raise _forbid(f"passes a keyword to {func.attr}(): methods take plain values")
            self.check(func.value, scope)
        elif isinstance(func, ast.Name):
            if _is_private(func.id):
                raise _forbid(f"uses a private name {_q(func.id)}")
            if func.id not in HELPERS:
                if func.id in scope or func.id in self.names:
                    raise _forbid(f"calls {func.id!r}, which is not a helper")
                detail = f"calls {_q(func.id)}, which is not a helper: the helpers are {', '.join(HELPERS)}"
                raise _Problem("expression_unknown_name", detail)
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
                raise _forbid(f"uses a private name {_q(target.id)}")
            return frozenset({target.id})
        if isinstance(target, ast.Tuple | ast.List):
            return frozenset().union(*(self.targets(part) for part in target.elts))
        raise _forbid("loops into something that is not a name (use `for x in ...` or `for k, v in ...`)")


# Nodes that only appear inside the ones above (operators, contexts, slices).
_PARTS: frozenset[type[ast.AST]] = frozenset(
    {ast.Expression, ast.Load, ast.Store, ast.comprehension, ast.keyword, ast.And, ast.Or}
    | set(_BINARY)
    | set(_UNARY)
    | set(_COMPARE)
)


def _private_problem(tree: ast.AST) -> tuple[str, str] | None:
    """The first private name in the text (`().__class__.__bases__` names `__class__`), if any."""
    found: list[tuple[int, int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and _is_private(node.id):
            found.append((node.end_lineno or 0, node.end_col_offset or 0, node.id))
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            found.append((node.end_lineno or 0, node.end_col_offset or 0, node.attr))
    return ("expression_forbidden", f"uses a private name {_q(min(found)[2])}") if found else None


def _depth_problem(tree: ast.AST) -> tuple[str, str] | None:
    stack: list[tuple[ast.AST, int]] = [(tree, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_EXPRESSION_DEPTH:
            return "expression_too_deep", f"nests deeper than {MAX_EXPRESSION_DEPTH} levels"
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(item))
    return None


def _parse(expression: str) -> ast.Expression | tuple[str, str]:
    if len(expression) > MAX_EXPRESSION_CHARS:
        return "expression_too_long", f"is {len(expression):,} characters long (the limit is {MAX_EXPRESSION_CHARS:,})"
    try:
        with AST_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. invalid escape sequences: the tree is what counts
            tree = ast.parse(expression, mode="eval")
    except SyntaxError as exc:  # also "too many nested parentheses", null bytes, 4300+ digit literals
        where = f" at column {exc.offset}" if exc.offset else ""
        return "expression_syntax", f"does not parse ({exc.msg}{where})"
    except (RecursionError, MemoryError):
        return "expression_too_deep", "is nested too deeply to parse"
    except ValueError:  # e.g. a lone surrogate from JSON "\ud800" (UnicodeEncodeError)
        return "expression_syntax", "does not parse (it contains characters that are not valid text)"
    return _depth_problem(tree) or tree


_cache: OrderedDict[tuple[str, tuple[str, ...]], ast.Expression | tuple[str, str]] = OrderedDict()
_cache_chars = 0
_cache_lock = threading.Lock()


def _compile(expression: str, names: tuple[str, ...]) -> ast.Expression | tuple[str, str]:
    """The checked tree of an expression, or its (code, detail) problem; a bounded LRU cache by text and names."""
    global _cache_chars
    if len(expression) > MAX_EXPRESSION_CHARS:
        return _parse(expression)
    key = (expression, names)
    with _cache_lock:
        if (found := _cache.get(key)) is not None:
            _cache.move_to_end(key)
            return found
    compiled = _parse(expression)
    if isinstance(compiled, ast.Expression) and (private := _private_problem(compiled)):
        compiled = private
    if isinstance(compiled, ast.Expression):
        try:
            _Checker(names).check(compiled.body, frozenset())
        except _Problem as problem:
            compiled = (problem.code, problem.detail)
        except RecursionError:
            compiled = ("expression_too_deep", "is nested too deeply to check")
    with _cache_lock:
        if key not in _cache:
            _cache[key] = compiled
            _cache_chars += len(expression)
            while len(_cache) > _CACHE_ENTRIES or _cache_chars > _CACHE_CHARS:
                (old, _), _ = _cache.popitem(last=False)
                _cache_chars -= len(old)
    return compiled


# --- public API -----------------------------------------------------------------------------------------------


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
        compiled = _compile(expression, tuple(dict.fromkeys(names)))
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
    compiled = _compile(expression, tuple(dict.fromkeys([*variables, "now"])))
    if not isinstance(compiled, ast.Expression):
        raise ExpressionError(f"the expression {compiled[1]}")
    run = _Run(variables, moment, timeout_s)
    try:
        return _ev(run, compiled.body, {})
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
