"""The counting rules of `store/tallies.py`: time-spent buckets, windows, and what a transaction's tally holds."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cbworkflow.models.events import Event, EventType
from cbworkflow.store.tallies import (
    ALL_TIME,
    BUCKET_BASE,
    Tally,
    bucket_seconds,
    day_of,
    hour_of,
    in_window,
    spent_bucket,
)

AT = datetime(2026, 10, 7, 15, 30, tzinfo=UTC)


@pytest.mark.parametrize("seconds", [0.001, 0.0137, 1, 2.5, 59, 3_600, 86_400 * 3, 86_400 * 400])
def test_a_bucket_stands_for_its_values_within_half_its_width(seconds: float) -> None:
    middle = bucket_seconds(spent_bucket(seconds))
    assert seconds / BUCKET_BASE**0.5 <= middle * 1.000001
    assert middle <= seconds * BUCKET_BASE**0.5 * 1.000001


def test_buckets_grow_with_the_time_and_under_a_millisecond_is_zero() -> None:
    assert spent_bucket(0) == spent_bucket(0.0009) == 0
    assert bucket_seconds(0) == 0
    values = [spent_bucket(s) for s in (0.001, 0.01, 1, 60, 3600, 86_400)]
    assert values == sorted(values)
    assert len(set(values)) == len(values)


def test_windows_take_hours_and_the_time_spent_of_the_days_they_touch() -> None:
    first, last = hour_of(AT), hour_of(AT) + 5
    assert in_window("entered", first, (first, last))
    assert not in_window("entered", first - 1, (first, last))
    assert not in_window("entered", last, (first, last))
    assert in_window("spent", day_of(first), (first, last))  # the day's row, kept at its first hour
    assert not in_window("spent", day_of(first) - 24, (first, last))
    assert not in_window("placed", ALL_TIME, (1, last))


def _event(type_: EventType, node: str, **data: object) -> Event:
    return Event(
        id=f"e-{type_.value}-{node}",
        type=type_,
        timestamp=AT,
        node_id=node,
        actor="system",
        data=data,
        instance_id="i1",
        contact_id="c1",
        template_id="tpl",
    )


def test_a_step_counts_its_happenings_twice_and_a_move_nets_out() -> None:
    tally = Tally()
    tally.events(
        [
            _event(EventType.NODE_EXITED, "call", outcome="answered", seconds=12.0),
            _event(EventType.NODE_ENTERED, "done"),
            _event(EventType.INSTANCE_COMPLETED, "done", end_status="success"),
            _event(EventType.USER_NOTE, "call"),  # not counted
        ]
    )
    tally.moved("tpl", ("active", "call"), ("completed", "done"))
    tally.moved("tpl", ("waiting", "x"), ("waiting", "x"))  # no change
    tally.placed("tpl", "active", "y", +1)
    tally.placed("tpl", "active", "y", -1)  # cancels out: not written
    hour = hour_of(AT)
    taken = dict(tally.take())
    assert taken == {
        ("tpl", "entered", "done", "", hour): 1,
        ("tpl", "entered", "done", "", ALL_TIME): 1,
        ("tpl", "outcome", "call", "answered", hour): 1,
        ("tpl", "outcome", "call", "answered", ALL_TIME): 1,
        ("tpl", "spent", "call", str(spent_bucket(12.0)), day_of(hour)): 1,
        ("tpl", "spent", "call", str(spent_bucket(12.0)), ALL_TIME): 1,
        ("tpl", "ended", "done", "success", hour): 1,
        ("tpl", "ended", "done", "success", ALL_TIME): 1,
        ("tpl", "placed", "call", "active", ALL_TIME): -1,
        ("tpl", "placed", "done", "completed", ALL_TIME): 1,
    }
    assert tally.take() == []  # taken once
