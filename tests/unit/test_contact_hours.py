"""Contact hours without a store: whose clock (the contact's zone, its phone's, the tenant's) and the next opening
around daylight-saving changes, including hours that start or end in the hour the clocks skip or repeat."""

from __future__ import annotations

from datetime import UTC, date, datetime, time

from cbworkflow.engine.hours import instant, next_opening, zone, zone_name
from cbworkflow.models.contact_rules import ContactHours

NEW_YORK = zone("America/New_York")


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def test_a_wall_time_the_clocks_skip_is_the_moment_they_jump() -> None:
    assert instant(date(2026, 3, 8), time(2, 30), NEW_YORK) == utc(2026, 3, 8, 7, 0)  # 03:00 EDT
    assert instant(date(2026, 3, 8), time(9, 0), NEW_YORK) == utc(2026, 3, 8, 13, 0)  # 09:00 EDT
    assert instant(date(2026, 11, 1), time(1, 30), NEW_YORK) == utc(2026, 11, 1, 5, 30)  # the first 01:30 (EDT)


def test_hours_that_end_in_the_skipped_hour_close_when_the_clocks_jump() -> None:
    night = ContactHours(start="01:00", end="02:30")
    assert next_opening(night, "America/New_York", utc(2026, 3, 8, 6, 50)) == utc(2026, 3, 8, 6, 50)  # 01:50 EST
    assert next_opening(night, "America/New_York", utc(2026, 3, 8, 7, 10)) == utc(2026, 3, 9, 5, 0)  # 03:10 EDT
    early = ContactHours(start="02:30", end="20:00")
    assert next_opening(early, "America/New_York", utc(2026, 3, 8, 6, 0)) == utc(2026, 3, 8, 7, 0)


def test_whose_clock() -> None:
    assert zone_name({"timezone": "America/Los_Angeles", "phone_e164": "+12125550100"}, "Europe/Paris") == (
        "America/Los_Angeles"
    )
    assert zone_name({"phone_e164": "+12125550100"}, "Europe/Paris") == "America/New_York"
    assert zone_name({"phone_e164": "+18005550100"}, "Europe/Paris") == "Europe/Paris"  # toll free: many zones
    assert zone_name({"timezone": "Mars/Base"}, "Europe/Paris") == "Europe/Paris"  # a stray name falls through
    assert zone_name(None, "Nowhere/At_All") == "America/New_York"


def test_days_and_midnight() -> None:
    weekdays = ContactHours(days=["mon", "fri"], start="10:00", end="24:00")
    saturday_noon = utc(2026, 6, 13, 16, 0)  # 12:00 EDT, a Saturday
    assert next_opening(weekdays, "America/New_York", saturday_noon) == utc(2026, 6, 15, 14, 0)  # Monday 10:00
    friday_late = utc(2026, 6, 13, 3, 59)  # Friday 23:59 EDT: still open until midnight
    assert next_opening(weekdays, "America/New_York", friday_late) == friday_late
