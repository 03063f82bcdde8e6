"""The campaign-number counts in SQL: added in one upsert per transaction, summed by one indexed query."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, and_, func, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from .. import schema as s
from ..tallies import ALL_TIME, Count, Key, Metric, Tally, day_of

KEY_COLUMNS = ["tenant", "template_id", "hour", "metric", "node", "key", "shard"]


def write_tallies(conn: Connection, tallies: Iterable[tuple[str, Tally]], *, shard: int) -> None:
    """Add each tenant's changes to the counts, in key order (concurrent writers then lock rows in one order)."""
    merged = merged_tallies(tallies, shard=shard)
    upsert_tallies(conn, [value for tenant in sorted(merged) for value in merged[tenant]])


def merged_tallies(tallies: Iterable[tuple[str, Tally]], *, shard: int) -> dict[str, list[dict[str, Any]]]:
    """Each tenant's changes (taken from the tallies) merged by key, as rows in key order; none that add zero."""
    merged: defaultdict[tuple[str, Key], int] = defaultdict(int)
    for tenant, tally in tallies:
        for change, n in tally.take():
            merged[(tenant, change)] += n
    found: dict[str, list[dict[str, Any]]] = {}
    for (tenant, (t, m, node, key, h)), n in sorted(merged.items()):
        if n:
            row = {"tenant": tenant, "template_id": t, "metric": m, "node": node, "key": key, "hour": h}
            found.setdefault(tenant, []).append(row | {"shard": shard, "n": n})
    return found


def upsert_tallies(conn: Connection, values: list[dict[str, Any]]) -> None:
    if values:
        conn.execute(_UPSERT[conn.dialect.name], values)


def _upsert(insert: Any) -> Any:
    """Add `n` to a count, making its row when it is the first: built once per dialect, so SQLAlchemy compiles it
    once and sends a transaction's rows as one executemany."""
    statement = insert(s.workflow_tallies)
    return statement.on_conflict_do_update(
        index_elements=KEY_COLUMNS, set_={"n": s.workflow_tallies.c.n + statement.excluded.n}
    )


_UPSERT = {"postgresql": _upsert(pg_insert), "sqlite": _upsert(sqlite_insert)}


def read_tallies(conn: Connection, tenant: str, template_id: str, hours: tuple[int, int] | None) -> list[Count]:
    """The counts of a template summed over shards: all-time, or what happened in the hours [first, last) (the
    time-spent rows of the days they touch) with where instances are now. Each part is one range of the primary
    key."""
    c = s.workflow_tallies.c
    mine = (c.tenant == tenant, c.template_id == template_id)
    if hours is None:
        parts = [and_(*mine, c.hour == ALL_TIME)]
    else:
        first, last = max(hours[0], ALL_TIME + 1), hours[1]
        parts = [
            and_(*mine, c.hour == ALL_TIME, c.metric == Metric.PLACED.value),
            and_(
                *mine,
                c.hour >= max(day_of(first), ALL_TIME + 1),
                c.hour < last,
                or_(c.hour >= first, c.metric == Metric.SPENT.value),
            ),
        ]
    found: list[Count] = []
    for where in parts:
        query = select(c.metric, c.node, c.key, func.sum(c.n)).where(where).group_by(c.metric, c.node, c.key)
        found.extend(Count(metric, node, key, int(n)) for metric, node, key, n in conn.execute(query))
    return found
