"""PostgreSQL: the end of a writing transaction (its events numbered and written, its counts added, other processes
told) as one statement per tenant.

Taking a tenant's next sequences locks its `event_sequences` row until the commit (`outbox.py` says why), so
every concurrent step of that tenant waits for what this transaction still sends after taking them. Sent one by
one (the upsert of the sequences, the events' insert, the counts' upsert, `pg_notify`), that was four round trips,
each followed by a wait for the interpreter lock while other threads of the process run Python: under 32
concurrent requests, each holder kept the row about 8 ms and steps of one tenant queued behind it. Sent as one
statement, the lock is held for one round trip and the commit. The counts are added after the sequences are
taken, on every path (so their rows are only ever locked under the tenant's, and a batch never deadlocks with a
step), so steps no longer wait for each other's count rows either.

The rows are made ready (one array per column) before the statement; its text does not change with their number,
so psycopg prepares it once per connection. A transaction with many events of one tenant (a batch's) takes the
general path (`flush_events`: the events by COPY), whose lock is held for the copy whatever its shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import psycopg
from sqlalchemy import Connection
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import DBAPIError

from ...models.events import Event
from .. import schema as s
from ..tallies import Tally
from . import rows
from .outbox import NOTIFY_CHANNEL, flush_events
from .tally_rows import merged_tallies, upsert_tallies

if TYPE_CHECKING:
    from .tx import SqlTx

# The events' columns sent as arrays (with their array types), in `rows.EVENT_COLUMNS` order; tenant and sequence
# are given by the statement.
_EVENT_ARRAYS = (
    ("id", "text"),
    ("instance_id", "text"),
    ("contact_id", "text"),
    ("template_id", "text"),
    ("type", "text"),
    ("timestamp", "timestamptz"),
    ("node_id", "text"),
    ("actor", "text"),
    ("data", "text"),  # JSON text, cast to jsonb row by row
    ("message", "text"),
)
_TALLY_ARRAYS = (
    ("template_id", "text"),
    ("hour", "int"),
    ("metric", "text"),
    ("node", "text"),
    ("key", "text"),
    ("n", "bigint"),
)


def _statement(notify: bool) -> str:
    event_arrays = ", ".join(f"%(e_{name})s::{kind}[]" for name, kind in _EVENT_ARRAYS)
    event_names = ", ".join(f"v_{name}" for name, _ in _EVENT_ARRAYS)
    event_values = ", ".join("v_data::jsonb" if name == "data" else f"v_{name}" for name, _ in _EVENT_ARRAYS)
    tally_arrays = ", ".join(f"%(t_{name})s::{kind}[]" for name, kind in _TALLY_ARRAYS)
    tally_names = ", ".join(f"t_{name}" for name, _ in _TALLY_ARRAYS)
    told = f", pg_notify('{NOTIFY_CHANNEL}', json_build_object(%(tenant)s::text, last)::text)" if notify else ""
    return (
        "WITH seq AS ("
        " INSERT INTO event_sequences (tenant, last) VALUES (%(tenant)s, %(n)s)"
        " ON CONFLICT (tenant) DO UPDATE SET last = event_sequences.last + excluded.last RETURNING last"
        "), written AS ("
        f" INSERT INTO events (tenant, {', '.join(name for name, _ in _EVENT_ARRAYS)}, sequence)"
        f" SELECT %(tenant)s, {event_values}, seq.last - %(n)s + v_ord"
        f" FROM seq, unnest({event_arrays}) WITH ORDINALITY AS v({event_names}, v_ord)"
        " ORDER BY v_ord"  # the timeline's order is the insert's
        "), counted AS ("
        " INSERT INTO workflow_tallies (tenant, template_id, hour, metric, node, key, shard, n)"
        " SELECT %(tenant)s, t_template_id, t_hour, t_metric, t_node, t_key, %(shard)s, t_n"
        f" FROM seq, unnest({tally_arrays}) AS t({tally_names})"  # from seq: after the sequences are taken
        " ON CONFLICT (tenant, template_id, hour, metric, node, key, shard)"
        " DO UPDATE SET n = workflow_tallies.n + excluded.n"
        f") SELECT last{told} FROM seq"
    )


_STATEMENTS = {notify: _statement(notify) for notify in (False, True)}


_STAMP = s.UTCDateTime()
_DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]


def _event_arrays(events: Sequence[Event]) -> dict[str, list[Any]]:
    columns: dict[str, list[Any]] = {f"e_{name}": [] for name, _ in _EVENT_ARRAYS}
    for e in events:
        columns["e_id"].append(e.id)
        columns["e_instance_id"].append(e.instance_id)
        columns["e_contact_id"].append(e.contact_id)
        columns["e_template_id"].append(e.template_id)
        columns["e_type"].append(e.type.value)
        columns["e_timestamp"].append(_STAMP.process_bind_param(e.timestamp, _DIALECT))  # refuses a naive time
        columns["e_node_id"].append(e.node_id)
        columns["e_actor"].append(e.actor)
        columns["e_data"].append(s.json_text(e.data))
        columns["e_message"].append(e.message)
    return columns


def _tally_arrays(values: list[dict[str, Any]]) -> dict[str, list[Any]]:
    return {f"t_{name}": [value[name] for value in values] for name, _ in _TALLY_ARRAYS}


def finish(conn: Connection, opened: Sequence[SqlTx], *, shard: int, notify: bool) -> dict[str, int]:
    """Write what the transactions of this connection kept (events and counts), tenants in name order; return
    `{tenant: last sequence}`. Same effect as `write_tallies` then `flush_events`.

    When every tenant's part is one statement, they and the COMMIT go in one pipeline: the server commits as soon
    as the last statement is done, so the tenant's lock is not held while this thread waits for the interpreter.
    The caller's commit then finds nothing to do; otherwise it commits as usual."""
    events: dict[str, list[Event]] = {}
    tallies: list[tuple[str, Tally]] = []
    for tx in opened:
        if tx.pending_events:
            events.setdefault(tx.tenant, []).extend(tx.pending_events)
        tallies.append((tx.tenant, tx.tally))
    counts = merged_tallies(tallies, shard=shard)
    tenants = sorted(set(events) | set(counts))
    if all(0 < len(events.get(tenant, ())) < rows.MANY_EVENTS for tenant in tenants):
        for tx in opened:
            tx.pending_events = []
        return _pipelined(conn, [(tenant, events[tenant], counts.get(tenant, [])) for tenant in tenants], shard, notify)
    heads: dict[str, int] = {}
    for tenant in tenants:
        mine = events.get(tenant, [])
        if not mine or len(mine) >= rows.MANY_EVENTS:
            # no events (nothing to number) or a batch's (by COPY): the general path, for this tenant alone, in
            # the one statement's order (the sequences, then the counts: the other order deadlocks against it)
            heads |= flush_events(conn, [tx for tx in opened if tx.tenant == tenant], notify=notify)
            upsert_tallies(conn, counts.get(tenant, []))
        else:
            found = conn.exec_driver_sql(_STATEMENTS[notify], _params(tenant, mine, counts.get(tenant, []), shard))
            heads[tenant] = int(found.scalar_one())
    for tx in opened:
        tx.pending_events = []
    return heads


def _params(tenant: str, events: Sequence[Event], counts: list[dict[str, Any]], shard: int) -> dict[str, Any]:
    return {"tenant": tenant, "n": len(events), "shard": shard} | _event_arrays(events) | _tally_arrays(counts)


def _pipelined(
    conn: Connection, parts: list[tuple[str, list[Event], list[dict[str, Any]]]], shard: int, notify: bool
) -> dict[str, int]:
    """Each tenant's statement, then COMMIT, sent together; the results read once the server has answered all.
    The driver's errors become SQLAlchemy's, as the store maps them (a unique key: 409; a deadlock: run again)."""
    raw: Any = conn.connection.dbapi_connection
    sql = _STATEMENTS[notify]
    sent = [(tenant, _params(tenant, events, counts, shard)) for tenant, events, counts in parts]
    cursors: list[tuple[str, Any]] = []
    try:
        with raw.pipeline():
            for tenant, params in sent:
                cursors.append((tenant, raw.cursor()))
                cursors[-1][1].execute(sql, params)
            raw.commit()
        return {tenant: int(cursor.fetchone()[0]) for tenant, cursor in cursors}
    except psycopg.Error as exc:
        raise DBAPIError.instance(sql, None, exc, psycopg.Error) from exc
    finally:
        for _, cursor in cursors:
            cursor.close()
