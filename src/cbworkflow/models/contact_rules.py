"""When a person may be reached (workflows.md § Consent and contact rules): contact hours, frequency caps, and the
tenant settings that hold them (`GET/PATCH /api/tenants/{id}/settings`)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import time, timedelta
from enum import StrEnum
from typing import Annotated, Self

from pydantic import AfterValidator, ConfigDict, Field, model_validator

from ..times import parse_duration
from .common import RequestModel, distinct
from .consent import Channel
from .contacts import TimeZoneName


class Day(StrEnum):
    """A day of the week, by its first three letters."""

    MON = "mon"
    TUE = "tue"
    WED = "wed"
    THU = "thu"
    FRI = "fri"
    SAT = "sat"
    SUN = "sun"


WEEK = list(Day)
DEFAULT_TIMEZONE = "America/New_York"
LONGEST_WINDOW = timedelta(days=366)  # of a frequency cap
HOURS_CHANNELS = [Channel.SMS, Channel.PHONE]  # the channels contact hours apply to unless they say otherwise


def _clock_time(value: str) -> str:
    if not re.fullmatch(r"([01][0-9]|2[0-3]):[0-5][0-9]|24:00", value):
        raise ValueError(f"{value!r} is not a time of day as HH:MM (24-hour), e.g. 09:00 or 20:30")
    return value


ClockTime = Annotated[str, AfterValidator(_clock_time)]


def _window(value: str) -> str:
    try:
        seconds = parse_duration(value).total_seconds()
    except ValueError:
        seconds = 0
    if not 0 < seconds <= LONGEST_WINDOW.total_seconds():
        raise ValueError(f"{value!r} is not an ISO 8601 duration of at most a year, such as P7D or PT12H")
    return value


def _every_day() -> list[Day]:
    return list(WEEK)


class ContactHours(RequestModel):
    """When a person may be texted or called, in their own local time."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"days": ["mon", "tue"], "start": "09:00", "end": "20:00"}]}
    )

    days: Annotated[list[Day], Field(min_length=1), AfterValidator(distinct)] = Field(default_factory=_every_day)
    """The days of the week (`mon` … `sun`) on which the hours open; every day when absent."""
    start: ClockTime = "09:00"
    """When the hours open, local time, `HH:MM` (24-hour)."""
    end: ClockTime = "20:00"
    """When they close, local time, `HH:MM`, later than `start` (`24:00` for midnight)."""
    channels: Annotated[list[Channel], Field(min_length=1), AfterValidator(distinct)] = Field(
        default_factory=lambda: list(HOURS_CHANNELS)
    )
    """The channels the hours apply to (`sms` and `phone` when absent); steps on other channels run at any time."""

    @model_validator(mode="after")
    def _start_before_end(self) -> Self:
        if self.start >= self.end:
            raise ValueError(f"end ({self.end}) must be later than start ({self.start}) on the same day")
        return self

    @property
    def opens(self) -> time:
        return time.fromisoformat(self.start)

    @property
    def closes(self) -> time | None:
        """None for 24:00 (the end of the day)."""
        return None if self.end == "24:00" else time.fromisoformat(self.end)


DEFAULT_HOURS = ContactHours()


class FrequencyCap(RequestModel):
    """At most `max` sends on `channel` to one person in any window of `per`, across all of a tenant's templates."""

    channel: Channel
    """The channel counted (`sms`, `email`, `phone`, `door`, `mail`)."""
    max: Annotated[int, Field(ge=1, le=1000)]
    """How many sends the window allows (1 to 1,000)."""
    per: Annotated[str, AfterValidator(_window)]
    """The window, an ISO 8601 duration of at most a year (`P7D`, `PT24H`)."""


def _one_cap_per_channel(caps: list[FrequencyCap]) -> list[FrequencyCap]:
    seen: set[tuple[Channel, str]] = set()
    for cap in caps:
        if (cap.channel, cap.per) in seen:
            raise ValueError(f"two caps for {cap.channel.value} per {cap.per}: keep one")
        seen.add((cap.channel, cap.per))
    return caps


Caps = Annotated[list[FrequencyCap], Field(max_length=20), AfterValidator(_one_cap_per_channel)]


class TenantSettings(RequestModel):
    """A tenant's contact rules (`GET /api/tenants/{id}/settings`)."""

    timezone: TimeZoneName = DEFAULT_TIMEZONE
    """The time zone of contacts whose own is unknown (no `timezone`, and a phone number that does not name exactly
    one), as an IANA name."""
    contact_hours: ContactHours | None = None
    """The tenant's contact hours; null: every day 09:00 to 20:00 for `sms` and `phone`. A template's own
    `contact_hours` take precedence."""
    frequency_caps: Caps = Field(default_factory=list)
    """Sends per person per window, counted across all of the tenant's templates (at most 20 caps)."""


@dataclass(frozen=True)
class ContactRules:
    """What a step of one template follows: its contact hours (the template's, else the tenant's, else the
    default), the tenant's time zone for contacts whose own is unknown, and the tenant's caps."""

    hours: ContactHours = field(default_factory=ContactHours)
    timezone: str = DEFAULT_TIMEZONE
    caps: tuple[FrequencyCap, ...] = ()

    @classmethod
    def of(cls, settings: TenantSettings, template_hours: ContactHours | None) -> ContactRules:
        """A template's rules: its own hours, else the tenant's, else the default; the tenant's zone and caps."""
        hours = template_hours or settings.contact_hours or DEFAULT_HOURS
        return cls(hours, settings.timezone, tuple(settings.frequency_caps))


class TenantSettingsPatch(RequestModel):
    """Body of `PATCH /api/tenants/{id}/settings`: the fields given replace the stored ones; a field given as
    `null` goes back to its default; a field left out stays as it is."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "timezone": "America/Chicago",
                    "contact_hours": {
                        "days": ["mon", "tue", "wed", "thu", "fri", "sat"],
                        "start": "09:00",
                        "end": "20:00",
                    },
                    "frequency_caps": [{"channel": "sms", "max": 2, "per": "P7D"}],
                }
            ]
        }
    )

    timezone: TimeZoneName | None = None
    """The default time zone, an IANA name; `null`: `America/New_York`."""
    contact_hours: ContactHours | None = None
    """The tenant's contact hours (the whole object); `null` goes back to the default (every day 09:00 to 20:00)."""
    frequency_caps: Caps | None = None
    """The whole list of caps; `null` or `[]`: none."""
