"""How the sandbox's messages name values: 'None', 'a str', 'an int', a quoted excerpt."""

from __future__ import annotations

from datetime import datetime, timedelta

SEQUENCES = (list, tuple, str)
FLAT: frozenset[type] = frozenset({bool, float, type(None), datetime, timedelta})
CONTAINERS = (list, tuple, dict, set, frozenset)


def kind(value: object) -> str:
    """How messages name a value's type."""
    if value is None:
        return "None"
    return type(value).__name__


def none_hint(*values: object) -> str:
    return " (a missing key or field gives None)" if any(v is None for v in values) else ""


def quoted(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def a_kind(value: object) -> str:
    """'a str', 'an int': how messages name a value's type with its article."""
    name = kind(value)
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"
