"""The time grammar of templates: durations (`P3D`, `PT2H30M`, `3d`, `45s`) and `until` times.

Validation judges templates with it and the engine schedules waits with it, so a duration validation accepts is
exactly one the engine can run.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

MAX_DURATION = timedelta(days=3653)  # ten years: beyond any campaign, far below timedelta's overflow

_N = r"(\d{1,12})"  # bounded digit runs keep int() cheap; the ten-year cap is checked before timedelta()
_ISO = rf"P(?:{_N}W|(?:{_N}D)?(?:T(?:{_N}H)?(?:{_N}M)?(?:{_N}(?:[.,](\d{{1,9}}))?S)?)?)"
_ISO_DURATION = re.compile(_ISO, re.ASCII)  # ASCII: `\d` would also take other scripts' digits
_SHORT_DURATION = re.compile(rf"{_N}([dhms])", re.ASCII)
_UNIT_SECONDS = {"d": 86_400, "h": 3_600, "m": 60, "s": 1}


def parse_duration(text: str) -> timedelta:
    """`P3D`, `PT2H30M`, `PT1.5S`, `P1W` or `3d`/`2h`/`30m`/`45s`; the ValueError says what is accepted."""
    value = text.strip()
    if short := _SHORT_DURATION.fullmatch(value):
        micros = int(short[1]) * _UNIT_SECONDS[short[2]] * 1_000_000
    else:
        iso = _ISO_DURATION.fullmatch(value)
        if iso is None or value.endswith("T") or not any(iso.groups()):
            raise ValueError(
                f"{_quoted(text)} is not a duration: use ISO 8601 like P3D, PT2H30M, P1W, or 3d, 2h, 30m, 45s"
            )
        weeks, days, hours, minutes, seconds, fraction = (g or "0" for g in iso.groups())
        whole = int(weeks) * 604_800 + int(days) * 86_400 + int(hours) * 3_600 + int(minutes) * 60 + int(seconds)
        micros = whole * 1_000_000 + int(fraction[:6].ljust(6, "0"))
    if micros > MAX_DURATION // timedelta(microseconds=1):
        raise ValueError(f"the duration {_quoted(text)} is longer than 10 years")
    return timedelta(microseconds=micros)


def parse_until(text: str) -> datetime:
    """A wait's `until`, literal or rendered from a placeholder: an ISO 8601 time with an offset."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"until {text[:80]!r} is not a date and time with offset (ISO 8601)") from None
    if when.tzinfo is None:
        raise ValueError(f"until {text[:80]!r} has no UTC offset")
    return when


def is_until(value: str, placeholder: re.Pattern[str]) -> bool:
    """Whether `value` is an `until` a template may hold: a time with an offset, or a placeholder that will be one."""
    if placeholder.fullmatch(value):
        return True
    try:
        parse_until(value)
    except ValueError:
        return False
    return True


def _quoted(text: str, limit: int = 60) -> str:
    """Quote user text for a message, cut short so a huge value cannot flood it."""
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")
