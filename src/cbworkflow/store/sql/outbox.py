"""Events in SQL: the timelines, and the tenant-wide outbox every reader (the live stream, webhook deliveries)
follows by `sequence`.

A transaction keeps the events it appends and writes them just before it commits (`flush_events`), after taking
its tenant's next sequences from `event_sequences` with one upsert. That upsert locks the tenant's row until the
commit, so a transaction holding later sequences commits after the one holding earlier ones: readers see
committed sequences in order and without gaps, and never need to wait for a hole to fill. A rollback takes its
sequences back with it. The lock is taken last and held only for the inserts and the commit, so concurrent
steps of one tenant wait for each other only that long (on PostgreSQL one statement sent with the commit:
`pg_tail.py`).

On PostgreSQL the same transaction calls `pg_notify`, which is delivered to listening processes only when (and
if) it commits: other processes wake at once, and the table stays the truth.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, insert, select, text
from sqlalchemy.sql import ColumnElement, Select

from ...models.events import Event
from .. import schema as s
from ..base import Page, PageRequest
from ..filters import EventFilter
from ..paging import cut_page, int_cursor
from ..tallies import Tally
from . import rows

if TYPE_CHECKING:
    from .tx import SqlTx

NOTIFY_CHANNEL = "cbw_outbox"
_ALLOCATE = text(
    "INSERT INTO event_sequences (tenant, last) VALUES (:tenant, :n) "
    "ON CONFLICT (tenant) DO UPDATE SET last = event_sequences.last + excluded.last RETURNING last"
)
_NOTIFY = text(f"SELECT pg_notify('{NOTIFY_CHANNEL}', :payload)")


def flush_events(conn: Connection, opened: Sequence[SqlTx], *, notify: bool) -> dict[str, int]:
    """Write the events every transaction of this connection kept, numbered; return `{tenant: last sequence}`.
    Tenants in name order, so two transactions spanning the same tenants lock them in the same order."""
    by_tenant: dict[str, list[tuple[SqlTx, list[Event]]]] = {}
    for tx in opened:
        if tx.pending_events:
            by_tenant.setdefault(tx.tenant, []).append((tx, tx.pending_events))
            tx.pending_events = []
    heads: dict[str, int] = {}
    for tenant in sorted(by_tenant):
        batches = by_tenant[tenant]
        total = sum(len(events) for _, events in batches)
        last = int(conn.execute(_ALLOCATE, {"tenant": tenant, "n": total}).scalar_one())
        first = last - total + 1
        for tx, events in batches:
            tx.write_events(events, first)
            first += len(events)
        heads[tenant] = last
    if heads and notify:
        conn.execute(_NOTIFY, {"payload": json.dumps(heads, separators=(",", ":"))})
    return heads


def event_values(tenant: str, events: Sequence[Event], first: int) -> list[dict[str, Any]]:
    return [
        {**e.model_dump(mode="python"), "type": e.type.value, "tenant": tenant, "sequence": first + n}
        for n, e in enumerate(events)
    ]


class OutboxRows:
    """The events part of `SqlTx`: appended events wait in `pending_events` for `flush_events`."""

    conn: Connection
    tenant: str
    pending_events: list[Event]
    tally: Tally

    if TYPE_CHECKING:  # SqlTx's own: FOR UPDATE where the backend locks rows

        def _locked(self, query: Select[Any]) -> Select[Any]: ...

    def append_events(self, events: Sequence[Event]) -> None:
        if events:
            self.pending_events.extend(events)
            self.tally.events(events)

    def write_events(self, events: Sequence[Event], first: int) -> None:
        """Insert `events` numbered from `first`; a backend may write a large batch past SQLAlchemy."""
        if len(events) >= rows.MANY_EVENTS:
            self._append_many(events, first)
        else:
            self.conn.execute(insert(s.events), event_values(self.tenant, events, first))

    def _append_many(self, events: Sequence[Event], first: int) -> None:
        self.conn.execute(insert(s.events), event_values(self.tenant, events, first))

    # ------------------------------------------------------------------ the outbox
    def events_after(
        self, after: int, limit: int, where: EventFilter | None = None, until: int | None = None
    ) -> list[Event]:
        e = s.events.c
        query = select(s.events).where(e.tenant == self.tenant, e.sequence > after)
        if until is not None:
            query = query.where(e.sequence <= until)
        if where is not None:
            query = query.where(*self._matching(where))
        found = self.conn.execute(query.order_by(e.sequence).limit(limit)).all()
        return [rows.event(row) for row in found]

    def _matching(self, where: EventFilter) -> list[ColumnElement[bool]]:
        e = s.events.c
        clauses: list[ColumnElement[bool]] = []
        for column, value in ((e.instance_id, where.instance_id), (e.contact_id, where.contact_id)):
            if value is not None:
                clauses.append(column == value)
        if where.template_id is not None:
            clauses.append(e.template_id == where.template_id)
        if where.types:
            clauses.append(e.type.in_(list(where.types)))
        if where.held_by is not None:
            i = s.instances.c
            held = select(i.id).where(i.tenant == self.tenant, i.held_by == where.held_by)
            clauses.append(e.instance_id.in_(held.scalar_subquery()))
        return clauses

    def last_sequence(self) -> int:
        q = s.event_sequences.c
        found = self.conn.execute(select(q.last).where(q.tenant == self.tenant)).scalar()
        return int(found or 0)

    def outbox_cursor(self, name: str) -> int:
        c = s.outbox_cursors.c
        query = select(c.sequence).where(c.tenant == self.tenant, c.name == name)
        found = self.conn.execute(self._locked(query)).scalar()
        if found is None:
            self.conn.execute(
                text(
                    "INSERT INTO outbox_cursors (tenant, name, sequence) VALUES (:tenant, :name, 0) "
                    "ON CONFLICT (tenant, name) DO NOTHING"
                ),
                {"tenant": self.tenant, "name": name},
            )
            found = self.conn.execute(self._locked(query)).scalar()
        return int(found or 0)

    def set_outbox_cursor(self, name: str, sequence: int) -> None:
        c = s.outbox_cursors.c
        statement = s.outbox_cursors.update().where(c.tenant == self.tenant, c.name == name)
        self.conn.execute(statement.values(sequence=sequence))

    # ------------------------------------------------------------------ timelines
    def _events(self, where: ColumnElement[bool], page: PageRequest, newest_first: bool) -> Page[Event]:
        e = s.events.c
        query = select(s.events).where(e.tenant == self.tenant, where)
        if page.cursor is not None:
            last = int_cursor(page.cursor)
            query = query.where(e.seq < last if newest_first else e.seq > last)
        query = query.order_by(e.seq.desc() if newest_first else e.seq).limit(page.limit + 1)
        found, cursor = cut_page(self.conn.execute(query).all(), page.limit, lambda row: (row.seq,))
        return Page([rows.event(r) for r in found], cursor)

    def instance_events(self, instance_id: str, page: PageRequest, newest_first: bool = False) -> Page[Event]:
        return self._events(s.events.c.instance_id == instance_id, page, newest_first)

    def contact_events(self, contact_id: str, page: PageRequest) -> Page[Event]:
        return self._events(s.events.c.contact_id == contact_id, page, newest_first=True)
