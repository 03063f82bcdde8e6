"""Campaign numbers kept as counts, so `GET /api/workflows/{id}/stats` sums a few hundred rows at any scale.

Every write transaction gathers what its steps changed in a `Tally` (from the events it appends and the instances it
saves) and writes the merged counts once, just before it commits, so the numbers move atomically with the steps
they count. A count is a row keyed by (template, metric, node, key, hour): happenings (entered, outcomes, time
spent, end statuses) are counted twice, once in the hour they happened (for `since`/`until`) and once in the
all-time row (hour 0), which is all an unwindowed question reads. Time spent has one histogram row per bucket,
so its windowed rows are per day (kept at the day's first hour), not per hour: a week's window then reads a few
thousand rows at a million instances, not a hundred thousand. Where instances are now (`placed`) is all-time only:
it is a state, not a happening.

Time spent at a node is kept as a histogram of logarithmic buckets about 19% wide, so the median is found within
about 9% of the exact value without keeping one row per visit (a node has at most about 140 buckets, from a
millisecond to a year).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from ..models.events import Event, EventType
from ..models.instances import WorkflowInstance


class Metric(StrEnum):
    PLACED = "placed"  # node = where instances are (or ""), key = their status; all-time only
    ENTERED = "entered"  # node entered; key ""
    OUTCOME = "outcome"  # node left; key = the outcome
    SPENT = "spent"  # node left; key = the bucket of the seconds spent there
    ENDED = "ended"  # end node reached; key = its end status
    RETRY = "retry"  # a come-back-later try began at the node; key = its round (1, 2, ...)


ALL_TIME = 0
"""The hour of the rows that count everything (real hours are counted from 1970, so they are never 0)."""

BUCKET_BASE = 2**0.25
"""How much wider each time-spent bucket is than the one before it (about 19%)."""

Key = tuple[str, str, str, str, int]
"""(template id, metric, node, key, hour)."""


COUNTED_EVENTS = (EventType.NODE_ENTERED, EventType.NODE_EXITED, EventType.INSTANCE_COMPLETED)


def hour_of(at: datetime) -> int:
    return int(at.timestamp() // 3600)


def day_of(hour: int) -> int:
    """The first hour of the (UTC) day that holds `hour`: where time-spent counts of that day are kept."""
    return hour - hour % 24


def hour_start(hour: int) -> datetime:
    return datetime.fromtimestamp(hour * 3600, UTC)


def spent_bucket(seconds: float) -> int:
    """Bucket 0 holds visits under a millisecond; bucket b ≥ 1 holds [BASE^(b-1), BASE^b) milliseconds."""
    ms = seconds * 1000
    if ms < 1:
        return 0
    return math.floor(math.log(ms, BUCKET_BASE)) + 1


def bucket_seconds(bucket: int) -> float:
    """The value a bucket stands for: the geometric middle of its bounds, in seconds (0 for bucket 0)."""
    if bucket <= 0:
        return 0.0
    return float(BUCKET_BASE ** (bucket - 0.5)) / 1000


def in_window(metric: str, hour: int, hours: tuple[int, int]) -> bool:
    """Whether a windowed row counts in the hours [first, last): an hour row inside them, or a day's time-spent
    row for a day they touch."""
    first, last = hours
    if hour == ALL_TIME or hour >= last:
        return False
    return hour >= first or (metric == Metric.SPENT and hour >= day_of(first))


class Tally:
    """The count changes of one transaction, merged by key."""

    def __init__(self) -> None:
        self.deltas: defaultdict[Key, int] = defaultdict(int)

    def _happened(self, template: str, metric: Metric, node: str, key: str, at: datetime) -> None:
        hour = hour_of(at)
        if metric is Metric.SPENT:  # a histogram has many keys: one set of rows per day, not per hour
            hour = day_of(hour)
        self.deltas[(template, metric.value, node, key, hour)] += 1
        self.deltas[(template, metric.value, node, key, ALL_TIME)] += 1

    def events(self, events: Iterable[Event]) -> None:
        """Count what the events say happened: nodes entered and left (with outcome and time), ends reached."""
        for event in events:
            template, node = event.template_id, event.node_id
            if template is None or node is None or event.instance_id is None:
                continue
            if event.type is EventType.NODE_ENTERED:
                self._happened(template, Metric.ENTERED, node, "", event.timestamp)
            elif event.type is EventType.NODE_EXITED:
                self._happened(template, Metric.OUTCOME, node, str(event.data.get("outcome", "")), event.timestamp)
                seconds = event.data.get("seconds")
                if isinstance(seconds, int | float) and not isinstance(seconds, bool):
                    self._happened(template, Metric.SPENT, node, str(spent_bucket(seconds)), event.timestamp)
            elif event.type is EventType.INSTANCE_COMPLETED:
                end_status = str(event.data.get("end_status", ""))
                self._happened(template, Metric.ENDED, node, end_status, event.timestamp)
            elif event.type is EventType.WAIT_STARTED and event.data.get("condition") == "retry":
                self._happened(template, Metric.RETRY, node, str(event.data.get("retry", "")), event.timestamp)

    def placed(self, template: str, status: str, node: str | None, n: int) -> None:
        self.deltas[(template, Metric.PLACED.value, node or "", status, ALL_TIME)] += n

    def moved(self, template: str, before: tuple[str, str | None] | None, after: tuple[str, str | None] | None) -> None:
        """An instance went from (status, node) `before` to `after` (None: not stored)."""
        if before == after:
            return
        if before is not None:
            self.placed(template, before[0], before[1], -1)
        if after is not None:
            self.placed(template, after[0], after[1], +1)

    def take(self) -> list[tuple[Key, int]]:
        """The non-zero changes in key order (so concurrent writers lock rows in one order), and start afresh."""
        found = sorted((key, n) for key, n in self.deltas.items() if n)
        self.deltas.clear()
        return found


def place_of(instance: WorkflowInstance) -> tuple[str, str | None]:
    return instance.status.value, instance.current_node


@dataclass(frozen=True)
class Count:
    """One summed count as a store reads it back."""

    metric: str
    node: str
    key: str
    n: int
