"""The helpers an expression may call (`len`, `int`, `contains`, `days_since`...): each checks its arguments and
says in a sentence what it needs. docs/expressions.md documents them for template authors."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from .budget import Run
from .limits import MAX_NUMBER_TEXT, MAX_ROUND_DIGITS, MAX_SIZE, ExpressionError, too_large
from .words import CONTAINERS, SEQUENCES, kind, none_hint, quoted


def _number_text(text: str, what: str) -> str:
    stripped = text.strip()
    if len(stripped) > MAX_NUMBER_TEXT:
        raise ExpressionError(f"{what}() cannot read text of over {MAX_NUMBER_TEXT} characters as a number")
    return stripped


def _h_int(run: Run, value: object) -> int:
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
            raise ExpressionError(f"int() cannot read {quoted(value)} as a whole number") from None
    raise ExpressionError(f"int() needs a number or text, not {kind(value)}{none_hint(value)}")


def _h_float(run: Run, value: object) -> float:
    if isinstance(value, bool | int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(_number_text(value, "float"))
        except ValueError:
            raise ExpressionError(f"float() cannot read {quoted(value)} as a number") from None
    raise ExpressionError(f"float() needs a number or text, not {kind(value)}{none_hint(value)}")


def text_of(run: Run, value: object = "") -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, CONTAINERS) and run.weigh(value) > MAX_SIZE:
        raise too_large("characters")  # str() is at least as long as `deep` counts: refuse before building
    return str(value)


def _h_len(run: Run, value: object) -> int:
    if value is None:
        return 0
    if isinstance(value, (*SEQUENCES, dict, set, frozenset)):
        return len(value)
    raise ExpressionError(f"len() needs text, a list or a dict, not {kind(value)}")


def _h_bool(run: Run, value: object = False) -> bool:
    return bool(value)


def _h_abs(run: Run, value: object) -> Any:
    if isinstance(value, bool | int | float | timedelta):
        return abs(value)
    raise ExpressionError(f"abs() needs a number, not {kind(value)}{none_hint(value)}")


def _h_round(run: Run, value: object, digits: object = None) -> Any:
    if not isinstance(value, bool | int | float):
        raise ExpressionError(f"round() needs a number, not {kind(value)}{none_hint(value)}")
    if digits is None:
        return round(value)
    if not isinstance(digits, int) or abs(digits) > MAX_ROUND_DIGITS:
        raise ExpressionError(
            f"round() takes a whole number of digits between -{MAX_ROUND_DIGITS} and {MAX_ROUND_DIGITS}"
        )
    return round(value, digits)


def _extreme(name: str, pick: Callable[..., Any]) -> Callable[..., Any]:
    def helper(run: Run, *args: object, **kwargs: object) -> Any:
        items = run.loop(args[0], f"{name}()") if len(args) == 1 else args
        if not items and "default" in kwargs:
            return kwargs["default"]
        if not items:
            raise ExpressionError(f"{name}() of an empty list (give a default: {name}(x, default=0))")
        run.tick(len(items))
        return pick(items)

    return helper


def _h_any(run: Run, values: object) -> bool:
    return any(run.loop(values, "any()"))


def _h_all(run: Run, values: object) -> bool:
    return all(run.loop(values, "all()"))


def _h_sorted(run: Run, values: object, reverse: object = False) -> list[Any]:
    items = run.loop(values, "sorted()")
    run.tick(len(items) * max(1, len(items).bit_length()))
    return sorted(items, reverse=bool(reverse))


def _h_sum(run: Run, values: object, start: object = 0) -> Any:
    total = start
    for item in run.loop(values, "sum()"):
        if not isinstance(item, bool | int | float) or not isinstance(total, bool | int | float):
            raise ExpressionError(f"sum() adds numbers only, not {kind(item)}{none_hint(item)}")
        total = run.result(total + item)
    return total


def _h_lower(run: Run, value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value.lower()
    raise ExpressionError(f"lower() needs text, not {kind(value)}")


def _h_upper(run: Run, value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value.upper()
    raise ExpressionError(f"upper() needs text, not {kind(value)}")


def _h_contains(run: Run, haystack: object, needle: object) -> bool:
    if haystack is None:
        return False
    if isinstance(haystack, str):
        if not isinstance(needle, str):
            raise ExpressionError(f"contains() of text looks for text, not {kind(needle)}")
        return needle in haystack
    if isinstance(haystack, (list, tuple, dict, set, frozenset)):
        run.tick(len(haystack))
        return needle in haystack
    raise ExpressionError(f"contains() needs text, a list or a dict, not {kind(haystack)}")


def _moment(run: Run, value: object, name: str) -> datetime | None:
    if value is None or isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip()) if len(value) <= 64 else None
        except ValueError:
            moment = None
        if moment is None:
            raise ExpressionError(
                f"{name}() cannot read {quoted(value)}: use an ISO 8601 time like 2026-03-01T12:00:00Z"
            )
    else:
        raise ExpressionError(f"{name}() needs an ISO 8601 date and time, not {kind(value)}")
    if moment is not None and moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # a time without offset is taken as UTC
    return moment


def _h_days_since(run: Run, value: object) -> float | None:
    moment = _moment(run, value, "days_since")
    return None if moment is None else (run.now - moment) / timedelta(days=1)


def _h_hours_since(run: Run, value: object) -> float | None:
    moment = _moment(run, value, "hours_since")
    return None if moment is None else (run.now - moment) / timedelta(hours=1)


# name -> (function, fewest arguments, most arguments, keywords it takes). Every helper's result is checked by
# `Run.result` (sizes, finite numbers), except min and max: they pick a value that already exists.
HELPERS: Final[Mapping[str, tuple[Callable[..., Any], int, int, frozenset[str]]]] = {
    "len": (_h_len, 1, 1, frozenset()),
    "int": (_h_int, 1, 1, frozenset()),
    "float": (_h_float, 1, 1, frozenset()),
    "str": (text_of, 0, 1, frozenset()),
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
