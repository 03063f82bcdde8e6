"""The methods an expression may call on str, list, tuple, dict, datetime and timedelta values (none changes a
value), and the fields it may read on datetimes and timedeltas."""

from __future__ import annotations

import operator
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Final

from .budget import Run
from .limits import MAX_SIZE, ExpressionError, too_large
from .words import a_kind, kind

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
FIELDS: dict[type, frozenset[str]] = {
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
            raise too_large("characters")
    elif name == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        old, new = args[0], args[1]
        count = text.count(old)  # cheap: no allocation; an empty `old` matches len + 1 times
        if len(args) > 2 and isinstance(args[2], int) and args[2] >= 0:
            count = min(count, args[2])
        if len(text) + count * (len(new) - len(old)) > MAX_SIZE:
            raise too_large("characters")
    elif name == "join" and len(args) == 1 and isinstance(args[0], (list, tuple, set, frozenset, dict, str)):
        parts = args[0]
        size = sum(len(p) for p in parts if isinstance(p, str)) + len(text) * max(0, len(parts) - 1)
        if size > MAX_SIZE:
            raise too_large("characters")


def call_method(run: Run, target: object, name: str, args: tuple[Any, ...]) -> Any:
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
            raise ExpressionError(f"index(): the value is not in the {kind(target)}") from None
    if isinstance(target, datetime) and name in _DATETIME_METHODS:
        return _DATETIME_METHODS[name](target, *args)
    if isinstance(target, timedelta) and name in _TIMEDELTA_METHODS:
        return _TIMEDELTA_METHODS[name](target, *args)
    if target is None:
        raise ExpressionError(f"cannot call {name}() on None (a missing key or field gives None)")
    raise ExpressionError(f"{a_kind(target)} value has no method {name}()")
