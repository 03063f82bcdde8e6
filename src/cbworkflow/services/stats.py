"""Campaign numbers of a template, from the counts the store keeps with every step (`store/tallies.py`).

One indexed read of a few hundred summed rows, whatever the number of instances: nothing here loads instances or
events. `since`/`until` count what happened in whole hours; where instances are now (`current`, `statuses`)
is always the present.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from ..errors import InvalidInput, NotFound
from ..models.instances import TERMINAL, InstanceStatus
from ..models.stats import NodeStats, WorkflowStats
from ..models.templates import EndNode, WorkflowTemplate
from ..store.base import Store, Tx
from ..store.tallies import Count, Metric, bucket_seconds, hour_of, hour_start

FINISHED = frozenset(status.value for status in TERMINAL)


@dataclass
class _Node:
    current: int = 0
    entered: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    spent: dict[int, int] = field(default_factory=dict)
    retries: dict[str, int] = field(default_factory=dict)

    def median_seconds(self) -> float | None:
        """The lower median (the ⌈n/2⌉-th visit, shortest first) of the time-spent histogram."""
        wanted = (sum(self.spent.values()) + 1) // 2
        seen = 0
        for bucket in sorted(self.spent):
            seen += self.spent[bucket]
            if seen >= wanted:
                return round(bucket_seconds(bucket), 3)
        return None


def window(since: datetime | None, until: datetime | None) -> tuple[int, int] | None:
    """The whole hours [first, last) that cover `since`..`until`; None for all time."""
    if since is None and until is None:
        return None
    first = hour_of(since) if since is not None else 1
    last = math.ceil(until.timestamp() / 3600) if until is not None else 2**31 - 1
    if last <= first:
        raise InvalidInput("until: must be later than since")
    return first, last


def stats_of(template: WorkflowTemplate, counts: Sequence[Count], hours: tuple[int, int] | None) -> WorkflowStats:
    nodes = {node_id: _Node() for node_id in template.nodes}
    statuses = {status.value: 0 for status in InstanceStatus}
    ends = {node.end_status: 0 for node in template.nodes.values() if isinstance(node, EndNode)}
    for count in counts:
        if count.metric == Metric.PLACED:
            statuses[count.key] = statuses.get(count.key, 0) + count.n
            if count.node and count.key not in FINISHED:
                nodes.setdefault(count.node, _Node()).current += count.n
            continue
        numbers = nodes.setdefault(count.node, _Node())
        if count.metric == Metric.ENTERED:
            numbers.entered += count.n
        elif count.metric == Metric.OUTCOME:
            numbers.outcomes[count.key] = numbers.outcomes.get(count.key, 0) + count.n
        elif count.metric == Metric.SPENT:
            numbers.spent[int(count.key)] = numbers.spent.get(int(count.key), 0) + count.n
        elif count.metric == Metric.ENDED:
            ends[count.key] = ends.get(count.key, 0) + count.n
        elif count.metric == Metric.RETRY:
            numbers.retries[count.key] = numbers.retries.get(count.key, 0) + count.n
    old_and_empty = [n for n, v in nodes.items() if n not in template.nodes and not (v.current or v.entered)]
    for node_id in old_and_empty:
        del nodes[node_id]
    return WorkflowStats(
        template_id=template.id,
        nodes={
            node_id: NodeStats(
                current=v.current,
                entered=v.entered,
                outcomes=dict(sorted(v.outcomes.items())),
                median_seconds=v.median_seconds(),
                retries=dict(sorted(v.retries.items(), key=lambda item: int(item[0]) if item[0].isdigit() else 0)),
            )
            for node_id, v in nodes.items()
        },
        statuses=statuses,
        end_statuses=ends,
        since=hour_start(hours[0]) if hours and hours[0] > 1 else None,
        until=hour_start(hours[1]) if hours and hours[1] < 2**31 - 1 else None,
    )


class StatsService:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def of_template(
        self, tenant: str, template_id: str, since: datetime | None = None, until: datetime | None = None
    ) -> WorkflowStats:
        hours = window(since, until)

        def read(tx: Tx) -> tuple[WorkflowTemplate, list[Count]]:
            template = tx.get_template(template_id)
            if template is None:
                raise NotFound(f"no workflow template with id {template_id!r}")
            return template, tx.workflow_counts(template_id, hours)

        template, counts = await self.store.read(tenant, read)
        return stats_of(template, counts, hours)
