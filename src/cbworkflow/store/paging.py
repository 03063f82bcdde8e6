"""Cursors and pages, shared by every backend: what a cursor holds, how it is checked, how a page is cut.

A cursor is the sort key of the last row of a page, JSON in URL-safe base64. A cursor this server did not give
out (or that was altered) is a 422 naming the `cursor`, never a 500.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from ..errors import InvalidInput

R = TypeVar("R")

BAD_CURSOR = "cursor: not a cursor this server gave out; start again without it"
_MAX_INT = 2**63 - 1


def encode_cursor(*key: Any) -> str:
    """An opaque cursor: the sort key of the last row of a page."""
    return base64.urlsafe_b64encode(json.dumps(key, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, arity: int) -> list[Any]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        key = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(BAD_CURSOR) from exc
    if not isinstance(key, list) or len(key) != arity:
        raise InvalidInput(BAD_CURSOR)
    return key


def cursor_int(value: Any) -> int:
    """A number taken from a decoded cursor: a non-negative 64-bit integer, or the cursor is not ours."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _MAX_INT:
        raise InvalidInput(BAD_CURSOR)
    return value


def int_cursor(cursor: str) -> int:
    """A cursor of one number (an event's sequence, a row's pk, a stored stamp)."""
    return cursor_int(decode_cursor(cursor, 1)[0])


def time_cursor(cursor: str) -> tuple[datetime, int]:
    """A cursor of (a UTC time, a number that breaks ties between rows of the same time)."""
    when, tiebreak = _time_and(cursor)
    return when, cursor_int(tiebreak)


def name_cursor(cursor: str) -> tuple[str, int]:
    """A cursor of (a contact's name key, the number that breaks ties): short-name search pages by name."""
    key, tiebreak = decode_cursor(cursor, 2)
    if not isinstance(key, str):
        raise InvalidInput(BAD_CURSOR)
    return key, cursor_int(tiebreak)


def time_id_cursor(cursor: str) -> tuple[datetime, str]:
    """A cursor of (a UTC time, the id that breaks ties): for records without a number of their own (tenants)."""
    when, tiebreak = _time_and(cursor)
    if not isinstance(tiebreak, str):
        raise InvalidInput(BAD_CURSOR)
    return when, tiebreak


def _time_and(cursor: str) -> tuple[datetime, Any]:
    when, tiebreak = decode_cursor(cursor, 2)
    try:
        when_dt = datetime.fromisoformat(when)
    except (TypeError, ValueError):
        raise InvalidInput(BAD_CURSOR) from None
    if when_dt.tzinfo is None:
        raise InvalidInput(BAD_CURSOR)
    return when_dt, tiebreak


def cut_page(rows: Sequence[R], limit: int, key: Callable[[R], tuple[Any, ...]]) -> tuple[list[R], str | None]:
    """`rows` were fetched `limit + 1` at a time: the page, and the cursor of its last row when more follow."""
    if len(rows) <= limit:
        return list(rows), None
    page = list(rows[:limit])
    return page, encode_cursor(*key(page[-1]))
