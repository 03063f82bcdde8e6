"""Frequency caps (workflows.md § Consent and contact rules): at most `max` sends on a channel to one person in any
window of `per`, across all of a tenant's templates. Pure: the worker reads the contact's recent sends under the
contact's lock and asks when one more may go."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from ..models.consent import Channel
from ..models.contact_rules import FrequencyCap
from ..times import parse_duration


def window(caps: Sequence[FrequencyCap], channel: Channel) -> timedelta | None:
    """The longest window of the caps on `channel` (how far back sends count); None when none counts it."""
    windows = [parse_duration(cap.per) for cap in caps if cap.channel == channel]
    return max(windows) if windows else None


def released(caps: Sequence[FrequencyCap], channel: Channel, sends: Sequence[datetime], at: datetime) -> datetime:
    """The earliest time from `at` on when one more send on `channel` keeps every cap (`sends`: the contact's
    sends on it, oldest first, none later than `at`). A cap allows a send at `t` while fewer than `max` sends lie
    in `(t - per, t]`; time only lets sends out of the window, so each cap's earliest time holds from then on, and
    the latest of them holds for all."""
    later = at
    for cap in caps:
        if cap.channel != channel:
            continue
        per = parse_duration(cap.per)
        inside = [sent for sent in sends if sent > at - per]
        if len(inside) >= cap.max:
            later = max(later, inside[len(inside) - cap.max] + per)  # when enough of them have left the window
    return later
