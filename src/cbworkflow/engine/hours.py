"""Contact hours in the person's local time (workflows.md § Consent and contact rules): whose clock, and when the
hours next open. Pure: the worker, the work queue, entering a node and simulations all ask the same questions.

Whose clock: the contact's `timezone` when set; else the time zone of its phone number when the number names
exactly one (`+1 213 …` is Los Angeles; a toll-free number names dozens); else the tenant's. Days and times are
wall-clock times in that zone, so a daylight-saving change moves them with the people: 09:00 stays 09:00.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Mapping
from datetime import UTC, datetime, time, timedelta
from datetime import date as date_
from functools import lru_cache
from typing import Any

import phonenumbers

from ..models.contact_rules import DEFAULT_TIMEZONE, WEEK, ContactHours
from ..models.contacts import known_zone

DAYS_AHEAD = 8  # a week of days is always enough to find the next opening: every ContactHours has a day


@lru_cache(maxsize=4096)
def phone_zone(e164: str) -> str | None:
    """The one IANA zone of this number, or None when it names several (or none)."""
    from phonenumbers import timezone

    try:
        zones = timezone.time_zones_for_number(phonenumbers.parse(e164))
    except phonenumbers.NumberParseException:
        return None
    return zones[0] if len(zones) == 1 and zones[0] != "Etc/Unknown" else None


@lru_cache(maxsize=1024)
def zone(name: str) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(name)


def zone_name(contact: Mapping[str, Any] | None, fallback: str) -> str:
    """The IANA zone a contact's hours are read in."""
    if contact:
        own = contact.get("timezone")
        if isinstance(own, str) and known_zone(own):  # the API lets only known ones in; a stray one falls through
            return own
        e164 = contact.get("phone_e164")
        if isinstance(e164, str) and e164:
            found = phone_zone(e164)
            if found:
                return found
    return fallback if known_zone(fallback) else DEFAULT_TIMEZONE


def instant(date: date_, wall: time, tz: zoneinfo.ZoneInfo) -> datetime:
    """The UTC moment the clocks of `tz` first show `wall` on `date`, or pass it: a time the clocks skip (02:30 on
    the night they go forward) is the moment they jump; a time they show twice (going back) is the first."""
    naive = datetime.combine(date, wall)
    first = naive.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if first.astimezone(tz).replace(tzinfo=None) == naive:
        return first
    low = naive.replace(tzinfo=tz, fold=1).astimezone(UTC)  # in a gap: the earlier reading, before the jump
    high = first
    while high - low > timedelta(seconds=1):  # the first moment whose wall time is at or past `wall`
        middle = low + (high - low) / 2
        if middle.astimezone(tz).replace(tzinfo=None) >= naive:
            high = middle
        else:
            low = middle
    return high.replace(microsecond=0)


def next_opening(hours: ContactHours, zone_name: str, now: datetime) -> datetime:
    """`now` when the hours are open at `now` in that zone; else when they next open (UTC)."""
    tz = zone(zone_name)
    local = now.astimezone(tz)
    days = {WEEK.index(day) for day in hours.days}
    for ahead in range(DAYS_AHEAD):
        date = local.date() + timedelta(days=ahead)
        if date.weekday() not in days:
            continue
        opens = instant(date, hours.opens, tz)
        closes_at = hours.closes
        closes = (
            instant(date + timedelta(days=1), datetime.min.time(), tz)
            if closes_at is None
            else instant(date, closes_at, tz)
        )
        if now < opens:
            return opens
        if now < closes:
            return now
    raise AssertionError("unreachable: contact hours open on at least one day of every week")
