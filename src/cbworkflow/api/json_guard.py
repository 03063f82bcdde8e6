"""Refuse JSON that parses in Python but cannot be stored or sent back: checked once, for every body.

Python's `json` accepts what JSON (and the stores) do not, and pydantic lets some of it through into free-form
fields (`metadata`, `state`), where it would be saved and then break every later read of the record:
- NaN, Infinity and numbers too large for a float (1e400 becomes inf);
- unpaired surrogates (`"\\ud800"`), which no UTF-8 encoder accepts, and NUL characters, which PostgreSQL refuses;
- nesting deeper than MAX_DEPTH, which the serialiser and deep copies refuse (or the parser cannot finish).
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_DEPTH = 32


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def json_problem(body: bytes) -> str | None:
    """Why `body` is not storable JSON, or None when it is (or is not JSON at all: the route says so)."""
    try:
        data = json.loads(body, parse_constant=_refuse_constant)
    except RecursionError:
        return f"it is nested deeper than {MAX_DEPTH} levels"
    except ValueError as exc:
        if "is not a JSON number" in str(exc):
            return str(exc)
        return None  # malformed JSON: FastAPI answers 400 with the parser's words
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            if depth > MAX_DEPTH:
                return f"it is nested deeper than {MAX_DEPTH} levels"
            for key, item in value.items():
                if _bad_text(key):
                    return "a key holds a NUL character or an unpaired surrogate (\\ud800-\\udfff)"
                stack.append((item, depth + 1))
        elif isinstance(value, list):
            if depth > MAX_DEPTH:
                return f"it is nested deeper than {MAX_DEPTH} levels"
            stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, str):
            if _bad_text(value):
                return "a string holds a NUL character or an unpaired surrogate (\\ud800-\\udfff)"
        elif isinstance(value, float) and not math.isfinite(value):
            return "a number is too large to store"
    return None


def _bad_text(text: str) -> bool:
    """Unpaired surrogates are not text; NUL is text, but PostgreSQL cannot store it."""
    if "\x00" in text:
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
